"""Production mode (`PROVISIONER_ENV=production`): the settings a deployment must not start on.

The development defaults make a fresh machine work with nothing configured: a SQLite file, an
embedded Redis, a key made under the var dir, the provider sandbox. In a container each of them
is a silent fault (every pod its own SQLite file and Redis, a key the next pod cannot read), so
production names them at start instead. `refusals` is the rule, a pure function of the settings;
the command line prints `refusal_line` and exits 2 (worker/cli/common.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from worker.settings import Settings

PRODUCTION = "production"
# The shortest console token production takes: as long as a random 24-byte token in base64.
MIN_CONSOLE_TOKEN = 32
# Settings' Twilio account SID default: a placeholder, not an account.
PLACEHOLDER_TWILIO_SID = "AC00000000000000000000000000000000"
# Provider base URLs, by the variable that sets each.
PROVIDER_URLS = (
    ("PROVISIONER_TWILIO_API_URL", "twilio_api_url"),
    ("PROVISIONER_TWILIO_MESSAGING_URL", "twilio_messaging_url"),
    ("PROVISIONER_GOOGLE_DIRECTORY_URL", "google_directory_url"),
    ("PROVISIONER_GOOGLE_TOKEN_URL", "google_token_url"),
    ("PROVISIONER_MICROSOFT_GRAPH_URL", "microsoft_graph_url"),
    ("PROVISIONER_MICROSOFT_LOGIN_URL", "microsoft_login_url"),
)
_LOOPBACK = {"localhost", "::1"}


@dataclass(frozen=True)
class Refusal:
    """One setting production will not start with: the variable, and why."""

    variable: str
    reason: str

    def __str__(self) -> str:
        return f"{self.variable} {self.reason}"


def refusals(settings: Settings) -> list[Refusal]:
    """What stops these settings from running in production, in the order of the variables'
    importance; empty in development, whatever is set."""
    if settings.env != PRODUCTION:
        return []
    found: list[Refusal] = []
    if settings.database_url.startswith("sqlite"):
        # An empty URL has become the development SQLite file by now (Settings._derive).
        found.append(
            Refusal("PROVISIONER_DATABASE_URL", "is empty or SQLite: give the PostgreSQL URL")
        )
    if not settings.redis_url and not settings.redis_sentinels.strip():
        # With Sentinel the master is found through the sentinels (the URL is optional then).
        found.append(
            Refusal(
                "PROVISIONER_REDIS_URL",
                "is empty (and PROVISIONER_REDIS_SENTINELS unset): there is no embedded Redis",
            )
        )
    if not any(k.strip() for k in settings.secret_keys.get_secret_value().split(",")):
        found.append(
            Refusal(
                "PROVISIONER_SECRET_KEYS",
                "is unset: every process needs the same keys (`provisioner secrets new-key`)",
            )
        )
    if settings.sandbox_url:
        found.append(Refusal("PROVISIONER_SANDBOX_URL", "is set: it points at the sandbox"))
    else:
        found.extend(_provider_urls(settings))
    found.extend(_credentials(settings))
    console = settings.console_token.get_secret_value()
    if console and len(console) < MIN_CONSOLE_TOKEN:
        found.append(
            Refusal(
                "PROVISIONER_CONSOLE_TOKEN",
                f"is shorter than {MIN_CONSOLE_TOKEN} characters",
            )
        )
    return found


def refusal_line(found: list[Refusal]) -> str:
    """The one line a refused command prints on stderr."""
    return "PROVISIONER_ENV=production refuses to start: " + "; ".join(map(str, found))


def _provider_urls(settings: Settings) -> list[Refusal]:
    """Provider URLs that are not the real services': plain http, or this host (a sandbox
    started beside it). Production sends credentials to them: only over TLS, off this host."""
    found = []
    for variable, name in PROVIDER_URLS:
        parts = urlsplit(getattr(settings, name))
        host = (parts.hostname or "").lower()
        if parts.scheme != "https":
            found.append(Refusal(variable, "is not an https URL"))
        elif host in _LOOPBACK or host.startswith("127."):
            found.append(Refusal(variable, "points at this host (a sandbox?)"))
    return found


def _credentials(settings: Settings) -> list[Refusal]:
    """The platform's provider credentials that are empty (or the placeholder SID)."""
    found = []
    # The account's SID is in every Twilio URL, also when an API key (SK...) authenticates.
    if settings.twilio_account_sid in ("", PLACEHOLDER_TWILIO_SID):
        found.append(Refusal("PROVISIONER_TWILIO_ACCOUNT_SID", "is empty or the placeholder"))
    if not settings.twilio_auth_token.get_secret_value():
        found.append(Refusal("PROVISIONER_TWILIO_AUTH_TOKEN", "is empty"))
    service_account = (
        settings.google_service_account_json.get_secret_value()
        or settings.google_service_account_file is not None
    )
    if service_account:
        if not settings.google_admin_subject:
            found.append(
                Refusal(
                    "PROVISIONER_GOOGLE_ADMIN_SUBJECT",
                    "is empty: the service account acts as this admin",
                )
            )
    elif not settings.google_access_token.get_secret_value():
        found.append(
            Refusal(
                "PROVISIONER_GOOGLE_ACCESS_TOKEN",
                "is empty (or set PROVISIONER_GOOGLE_SERVICE_ACCOUNT_FILE or _JSON)",
            )
        )
    return found
