"""/readyz's view of the providers: do they accept the configured credentials? Asked at most
once per `PROVISIONER_PROVIDER_CHECK_INTERVAL_S`, in the background, and cached. Reported, never
a reason to be unready: the API calls no provider, so a refused credential must not take its
pods out of their Service (it is `provisioner_provider_credentials_ok` that alerts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from worker.providers import Providers
from worker.providers.credentials import OK, REFUSED, check_credentials
from worker.settings import Settings

log = structlog.get_logger(__name__)


class ProviderReadiness:
    """The last answer of each provider (`ok`, `credentials_refused`, `unreachable`); empty
    until the first check has finished. Reading it never waits for a provider: a stale answer
    starts a check in a thread, and the next reading shows its result."""

    def __init__(
        self,
        settings: Settings,
        *,
        providers: Callable[[], Providers] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._make_providers = providers or (lambda: Providers.from_settings(settings))
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._running = False
        self.status: dict[str, str] = {}
        # Each provider's last verdict on the credentials (True: accepted); an unreachable
        # provider gives none, so it keeps the one before.
        self.verdicts: dict[str, bool] = {}

    def read(self) -> dict[str, str]:
        with self._lock:
            now = self._clock()
            stale = (
                self._checked_at is None
                or now - self._checked_at >= self.settings.provider_check_interval_s
            )
            if stale and not self._running:
                self._running = True
                self._checked_at = now
                threading.Thread(target=self._check, name="provider-check", daemon=True).start()
            return dict(self.status)

    def _check(self) -> None:
        try:
            with self._make_providers() as providers:
                status = check_credentials(providers, self.settings.email_domain)
        except Exception as exc:  # never let the check take readiness down by itself
            log.warning("provider_check_failed", error=type(exc).__name__)
            status = {}
        for provider, answer in status.items():
            if answer == REFUSED:
                log.error("provider_credentials_refused", provider=provider)
        with self._lock:
            self.status = status
            for provider, answer in status.items():
                if answer in (OK, REFUSED):
                    self.verdicts[provider] = answer == OK
            self._running = False

    def credentials_ok(self) -> dict[str, bool]:
        """The verdicts, for the gauge; reading them also starts a check when stale."""
        self.read()
        with self._lock:
            return dict(self.verdicts)
