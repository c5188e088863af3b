"""Are the providers' credentials there, and do the providers accept them? The worker's
start-up check (`missing_credentials`) and /readyz's (`check_credentials`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from worker.providers.errors import AUTH_FAILED, NotFound, ProviderError
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.providers import Providers

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
# A look-up that finds nothing, and proves the credentials work when the provider answers it.
_PROBE_TAG = "provisioner-credential-check"

OK = "ok"
REFUSED = "credentials_refused"
UNREACHABLE = "unreachable"


def _real(settings: Settings, url: str) -> bool:
    """A provider URL that is not a sandbox: not `PROVISIONER_SANDBOX_URL`, not this host."""
    host = (urlsplit(url).hostname or "").lower()
    return not settings.sandbox_url and host not in _LOCAL_HOSTS and not host.startswith("127.")


def missing_credentials(settings: Settings) -> list[str]:
    """The settings of credentials that are empty although their provider is a real one: every
    request would be refused, so a worker should not start."""
    missing = []
    twilio = (settings.twilio_api_url, settings.twilio_messaging_url)
    if any(_real(settings, url) for url in twilio):
        if not settings.twilio_account_sid and not settings.twilio_api_key_sid:
            missing.append("PROVISIONER_TWILIO_ACCOUNT_SID")
        if not settings.twilio_auth_token.get_secret_value():
            missing.append("PROVISIONER_TWILIO_AUTH_TOKEN")
    google = _real(settings, settings.google_directory_url)
    service_account = (
        settings.google_service_account_json.get_secret_value()
        or settings.google_service_account_file is not None
    )
    if google and not service_account and not settings.google_access_token.get_secret_value():
        missing.append("PROVISIONER_GOOGLE_ACCESS_TOKEN")
    return missing


def check_credentials(providers: Providers, email_domain: str) -> dict[str, str]:
    """Each provider's answer to one authenticated look-up: `ok`, `credentials_refused` (it
    refused the configured credentials) or `unreachable` (no answer, or an error)."""
    result = {}
    probes: dict[str, Callable[[], object]] = {
        "twilio": lambda: providers.numbers.find(friendly_name=_PROBE_TAG),
        "google": lambda: providers.directory.get_user(f"{_PROBE_TAG}@{email_domain}"),
    }
    for name, probe in probes.items():
        try:
            probe()
            result[name] = OK
        except NotFound:
            result[name] = OK  # answered, so the credentials were accepted
        except ProviderError as exc:
            result[name] = REFUSED if exc.code == AUTH_FAILED else UNREACHABLE
    return result
