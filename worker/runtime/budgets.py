"""Provider rate budgets shared by every worker on every host, kept in Redis.

Each provider client asks `ProviderLimiter.gate` before it sends a request (an httpx request
hook). If a budget has no token left, or the provider answered 429 lately (`pause`), the
request is not sent: `Throttled` says when to come back, and the pipeline reschedules the
contact for then (a countdown, not a sleeping thread) without counting it as a failure.

Budgets are moving windows of the `limits` library on Redis (exact: never more than N
requests in any window of the period, whichever worker sends them). The decisions (which
budgets a request draws on, how long to wait) are in `worker.domain.ratelimit`.
"""

from __future__ import annotations

import contextvars
import random
import time

import httpx
import redis
import structlog
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from worker.domain.ratelimit import Rate, come_back_in, draws_for, operation_of, parse_budgets
from worker.providers import Providers
from worker.providers.http import ProviderClient
from worker.redis_conn import RedisTarget, target_of
from worker.settings import Settings

log = structlog.get_logger(__name__)

PAUSE_KEY = "provisioner:provider-pause:{provider}"
# A provider that throttled us without saying for how long is left alone this long.
DEFAULT_PAUSE_S = 1.0
# A process that found a provider not paused believes it this long before asking Redis again:
# one round trip per provider per interval rather than per request. A pause set by another
# process is seen within it; one set by this process, and any pause found, at once.
PAUSE_RECHECK_S = 0.25

# Whether the work in this context is a batch's (drawing only on the bulk share of budgets).
_bulk: contextvars.ContextVar[bool] = contextvars.ContextVar("provider_bulk", default=False)
# Provider requests this context has been let send (see `requests_sent`).
_sent: contextvars.ContextVar[int] = contextvars.ContextVar("provider_requests_sent", default=0)


def mark_bulk(bulk: bool) -> None:
    """Mark the provider requests this context makes from now on as a batch's (True, drawing
    only on the bulk share of each budget) or interactive (False)."""
    _bulk.set(bulk)


def requests_sent() -> int:
    """How many provider requests this context has been let send so far: compare two
    readings to know whether any request went out in between."""
    return _sent.get()


class Throttled(Exception):
    """A provider request was not sent: its budget is spent or the provider is paused."""

    def __init__(self, provider: str, operation: str, retry_in_s: float) -> None:
        super().__init__(f"{provider} {operation}: rate budget spent; retry in {retry_in_s:.2f} s")
        self.provider = provider
        self.operation = operation
        self.retry_in_s = retry_in_s


class ProviderLimiter:
    def __init__(
        self,
        url: str | RedisTarget,
        budgets: dict[str, Rate],
        *,
        bulk_share: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.budgets = budgets
        self.bulk_share = bulk_share
        self.rng = rng or random.Random()
        target = target_of(url)
        self._redis = target.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        uri, options = target.limits_storage(socket_timeout=0.5)
        self._windows = MovingWindowRateLimiter(storage_from_string(uri, **options))
        self._items: dict[Rate, RateLimitItem] = {}
        # provider -> (monotonic time until which it is known not paused, pause end or 0.0)
        self._pauses: dict[str, tuple[float, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderLimiter:
        return cls(
            RedisTarget.from_settings(settings),
            parse_budgets(settings.provider_rate_limits),
            bulk_share=settings.provider_bulk_share,
        )

    def install(self, providers: Providers) -> None:
        """Gate every request of the worker's provider clients."""
        for client in (providers.numbers, providers.senders, providers.directory):
            self.install_client(client)

    def install_client(self, client: ProviderClient) -> None:
        """Gate every request of one client (e.g. of an account's provider connection)."""

        def hook(request: httpx.Request, provider: str = client.provider) -> None:
            self.gate(provider, request.method, request.url.path)

        client.on_request(hook)

    def gate(self, provider: str, method: str, path: str) -> None:
        """Take the request's tokens, or raise Throttled (the request must not be sent)."""
        operation = operation_of(method, path)
        wait = self.admit(provider, operation, bulk=_bulk.get())
        if wait is not None:
            log.info(
                "provider_throttled",
                provider=provider,
                operation=operation,
                retry_in_s=round(wait, 2),
            )
            raise Throttled(provider, operation, wait)
        _sent.set(_sent.get() + 1)

    def admit(self, provider: str, operation: str, *, bulk: bool = False) -> float | None:
        """None if the request may go now, else the seconds after which to try again."""
        try:
            paused_s = self._paused_for(provider)
            if paused_s > 0:
                return come_back_in(paused_s, None, self.rng)
            draws = draws_for(
                provider, operation, bulk=bulk, budgets=self.budgets, bulk_share=self.bulk_share
            )
            for draw in draws:
                item = self._item(draw.rate)
                if not self._windows.hit(item, "provider", draw.key):
                    reset = self._windows.get_window_stats(item, "provider", draw.key).reset_time
                    return come_back_in(reset - time.time(), draw.rate, self.rng)
        except (redis.RedisError, StorageError) as exc:
            # Fail open: the provider's own 429s (and the pause they set) still slow us down.
            log.warning("provider_limiter_unavailable", error=type(exc).__name__)
        return None

    def _paused_for(self, provider: str) -> float:
        """Seconds left of the provider's pause (0.0: not paused)."""
        now = time.monotonic()
        known_until, ends = self._pauses.get(provider, (0.0, 0.0))
        if ends > now:
            return ends - now
        if known_until > now:
            return 0.0
        paused_ms = self._redis.pttl(PAUSE_KEY.format(provider=provider))
        if paused_ms > 0:
            self._pauses[provider] = (0.0, now + paused_ms / 1000)
            return paused_ms / 1000
        self._pauses[provider] = (now + PAUSE_RECHECK_S, 0.0)
        return 0.0

    def pause(self, provider: str, seconds: float | None) -> None:
        """Hold every worker's requests to `provider` for `seconds` (it answered 429)."""
        ms = max(1, round((seconds if seconds and seconds > 0 else DEFAULT_PAUSE_S) * 1000))
        key = PAUSE_KEY.format(provider=provider)
        try:
            # Never shorten a longer pause set by another worker.
            if self._redis.pttl(key) < ms:
                self._redis.set(key, "1", px=ms)
            self._pauses.pop(provider, None)  # ask Redis next time: the longest pause wins
        except redis.RedisError as exc:
            log.warning("provider_limiter_unavailable", error=type(exc).__name__)
            return
        log.info("provider_paused", provider=provider, pause_s=ms / 1000)

    def _item(self, rate: Rate) -> RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = RateLimitItemPerSecond(rate.count, rate.period_s)
        return item

    def close(self) -> None:
        self._redis.close()
