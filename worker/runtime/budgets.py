"""Provider rate budgets shared by every worker on every host, kept in Redis.

Each provider client asks `ProviderLimiter.gate` before it sends a request (an httpx request
hook). If a budget has no token left, or the provider answered 429 lately (`pause`), the
request is not sent: `Throttled` says when to come back, and the pipeline reschedules the
contact for then (a countdown, not a sleeping thread) without counting it as a failure.

Budgets are moving windows of the `limits` library on Redis (exact: never more than N
requests in any window of the period, whichever worker sends them). The decisions (which
budgets a request draws on, how long to wait) are in `worker.domain.ratelimit`.

Budgets, pauses and caps are kept per provider *connection* (`ProviderClient.connection`: the
Twilio account, each customer's Google Workspace domain or Microsoft tenant), since that is
what each provider limits: one tenant's batch never spends another's quota, and a 429 from one
tenant holds back only the requests to it.

Caps (`PROVISIONER_PROVIDER_CONCURRENCY`, e.g. `twilio=20`) bound the requests in flight per
connection across every worker (Twilio refuses an account's requests beyond its concurrency
limit with 20429): a slot is a member of a Redis sorted set, taken by one script that first
drops slots older than their lease (a worker that died holding one), held from before the
request is sent until its answer is classified. A request that finds no slot waits for one
in its thread (as for a connection of a pool) up to `provider_concurrency_wait_s`, then is
`Throttled` like a spent budget.

A process's requests waiting for a slot of one cap stand in one line (`_Line`), served in
arrival order: only the first asks Redis. Sixty threads waiting on a cap of 20 cost one
waiter in Redis, not sixty polling, and the request that has waited longest is the next sent.
Across processes the first waiters keep their order in Redis (`:heads`): a slot freed anywhere
goes to the one that came first, woken at once by the release (BLPOP on a list of its own, or
it asks again after `SLOT_WAKE_S`), so no process keeps the cap's slots to itself and a worker
host started later gets its share.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import redis
import structlog
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from worker.domain.ratelimit import (
    Rate,
    come_back_in,
    connection_key,
    draws_for,
    operation_of,
    parse_budgets,
    parse_caps,
)
from worker.providers import Providers, RateLimited
from worker.providers.http import ProviderClient
from worker.redis_conn import RedisTarget, target_of
from worker.settings import Settings

log = structlog.get_logger(__name__)

PAUSE_KEY = "provisioner:provider-pause:{provider}"
# A cap's slots, and the processes' first waiters in the order they came (`:heads`, scored
# by arrival; `:seen`, by their last ask): one hash tag, so one Redis Cluster slot.
SLOTS_KEY = "provisioner:provider-slots:{{{cap}}}"
# Take a slot of a cap: drop slots past their lease and waiters that stopped asking, then take
# a free slot if no more waiters came before us than there are free slots; else wait in the
# order (first ask: our arrival). Redis's own clock, so every host agrees on the ages.
# KEYS: slots, heads, seen. ARGV: slot lease (ms), cap, member, waiter silence (ms).
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('ZREM', KEYS[3], unpack(gone))
end
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  local ahead = redis.call('ZRANK', KEYS[2], ARGV[3])
  if not ahead then ahead = redis.call('ZCARD', KEYS[2]) end
  if ahead < free then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    if redis.call('ZREM', KEYS[2], ARGV[3]) == 1 then
      redis.call('ZREM', KEYS[3], ARGV[3])
      redis.call('DEL', KEYS[1] .. ':wake:' .. ARGV[3])
    end
    return 1
  end
end
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return 0
"""
# Free a slot, and wake the waiter that comes next for it (the one at the free slot's place in
# the order: two slots freed at once wake the first two), whichever process it is in.
# KEYS: slots, heads. ARGV: member, cap.
_FREE_SLOT = """
redis.call('ZREM', KEYS[1], ARGV[1])
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  local next = redis.call('ZRANGE', KEYS[2], free - 1, free - 1)
  if next[1] then
    local wake = KEYS[1] .. ':wake:' .. next[1]
    redis.call('LPUSH', wake, 1)
    redis.call('PEXPIRE', wake, 1000)
  end
end
return free
"""
# A waiter that has not asked for this long is gone (its process died or gave up): far above
# the interval at which the first waiter of a process asks.
SLOT_WAITER_SILENCE_MS = 500
# How long a process's first waiter blocks for a wake-up before it asks again anyway (a
# wake-up lost with a release that failed, or a slot freed by its lease running out).
SLOT_WAKE_S = 0.05
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


class _Line:
    """This process's requests waiting for a slot of one cap, in arrival order. Each waits on
    an event of its own, set when it comes first: only the first asks Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()

    def join(self) -> threading.Event:
        """A place at the end of the line (the caller checks `first` before it waits)."""
        place = threading.Event()
        with self._lock:
            self._waiting.append(place)
        return place

    def first(self, place: threading.Event) -> bool:
        with self._lock:
            return bool(self._waiting) and self._waiting[0] is place

    def leave(self, place: threading.Event) -> None:
        with self._lock:
            was_first = bool(self._waiting) and self._waiting[0] is place
            self._waiting.remove(place)
            if was_first and self._waiting:
                self._waiting[0].set()  # the next one asks at once: more slots may be free


class ProviderLimiter:
    def __init__(
        self,
        url: str | RedisTarget,
        budgets: dict[str, Rate],
        *,
        bulk_share: float = 1.0,
        rng: random.Random | None = None,
        caps: dict[str, int] | None = None,
        slot_lease_s: float = 30.0,
        slot_wait_s: float = 5.0,
    ) -> None:
        self.budgets = budgets
        self.bulk_share = bulk_share
        self.rng = rng or random.Random()
        self.caps = caps or {}
        self.slot_lease_ms = max(1, round(slot_lease_s * 1000))
        self.slot_wait_s = slot_wait_s
        target = target_of(url)
        self._redis = target.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        uri, options = target.limits_storage(socket_timeout=0.5)
        self._windows = MovingWindowRateLimiter(storage_from_string(uri, **options))
        self._items: dict[Rate, RateLimitItem] = {}
        self._take_slot = self._redis.register_script(_TAKE_SLOT)
        self._free_slot = self._redis.register_script(_FREE_SLOT)
        self._lines: dict[str, _Line] = {}
        self._lines_lock = threading.Lock()
        # provider -> (monotonic time until which it is known not paused, pause end or 0.0)
        self._pauses: dict[str, tuple[float, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderLimiter:
        return cls(
            RedisTarget.from_settings(settings),
            parse_budgets(settings.provider_rate_limits),
            bulk_share=settings.provider_bulk_share,
            caps=parse_caps(settings.provider_concurrency),
            # A slot outlives the longest request it can cover, then frees itself.
            slot_lease_s=settings.provider_connect_timeout_s
            + settings.provider_read_timeout_s
            + 5.0,
            slot_wait_s=settings.provider_concurrency_wait_s,
        )

    def install(self, providers: Providers) -> None:
        """Gate every request of the worker's provider clients."""
        for client in (providers.numbers, providers.senders, providers.directory):
            self.install_client(client)

    def install_client(self, client: ProviderClient) -> None:
        """Gate every request of one client (e.g. of an account's provider connection)."""

        def hook(request: httpx.Request, provider: str = client.provider) -> None:
            self.gate(provider, request.method, request.url.path, client.connection)

        client.on_request(hook)

        def guard(method: str, url: str) -> AbstractContextManager[None]:
            return self.in_flight(client.provider, client.connection, method, url)

        client.around_call(guard)

    @contextmanager
    def in_flight(self, provider: str, connection: str, method: str, url: str) -> Iterator[None]:
        """One request of `connection`, from before it is sent to its classified answer:
        holds a slot of the provider's cap (if it has one) and, when the answer is a 429,
        holds back every worker's requests to that connection (`pause`)."""
        slot = self._slot(provider, connection, method, url) if provider in self.caps else None
        try:
            yield
        except RateLimited as exc:
            self.pause(provider, exc.retry_after, connection)
            raise
        finally:
            if slot is not None:
                self._free(provider, *slot)

    def _slot(self, provider: str, connection: str, method: str, url: str) -> tuple[str, str]:
        key = SLOTS_KEY.format(cap=connection_key(provider, connection))
        keys = [key, f"{key}:heads", f"{key}:seen"]
        member = uuid.uuid4().hex
        deadline = time.monotonic() + self.slot_wait_s
        line = self._line(key)
        args = [self.slot_lease_ms, self.caps[provider], member, SLOT_WAITER_SILENCE_MS]
        place = line.join()
        try:
            try:
                while True:
                    if line.first(place):
                        # The first here asks Redis, and waits to be woken by a release
                        # (anywhere) of a slot that comes to it, or for SLOT_WAKE_S.
                        place.clear()
                        if self._take_slot(keys=keys, args=args):
                            return key, member
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._redis.blpop([f"{key}:wake:{member}"], timeout=min(SLOT_WAKE_S, left))
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        place.wait(left)  # set when it comes first
            finally:
                line.leave(place)
        except redis.RedisError as exc:
            return self._fail_open(key, member, exc)
        self._give_up(keys, member)
        raise self._throttled(provider, method, url)

    def _give_up(self, keys: list[str], member: str) -> None:
        """Leave the cap's order of waiters (else it goes when it is not seen asking)."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrem(keys[1], member)
            pipe.zrem(keys[2], member)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("provider_limiter_unavailable", error=type(exc).__name__)

    def _line(self, key: str) -> _Line:
        line = self._lines.get(key)
        if line is None:
            with self._lines_lock:
                line = self._lines.setdefault(key, _Line())
        return line

    @staticmethod
    def _fail_open(key: str, member: str, exc: redis.RedisError) -> tuple[str, str]:
        # Fail open, as the budgets do: the provider's own 429s still slow us down.
        log.warning("provider_limiter_unavailable", error=type(exc).__name__)
        return key, member

    def _throttled(self, provider: str, method: str, url: str) -> Throttled:
        operation = operation_of(method, httpx.URL(url).path)
        wait = come_back_in(0.5, None, self.rng)
        log.info(
            "provider_throttled",
            provider=provider,
            operation=operation,
            cap=self.caps[provider],
            retry_in_s=round(wait, 2),
        )
        return Throttled(provider, operation, wait)

    def _free(self, provider: str, key: str, member: str) -> None:
        try:
            self._free_slot(keys=[key, f"{key}:heads"], args=[member, self.caps[provider]])
        except redis.RedisError as exc:  # the slot frees itself after its lease
            log.warning("provider_limiter_unavailable", error=type(exc).__name__)

    def gate(self, provider: str, method: str, path: str, connection: str = "platform") -> None:
        """Take the request's tokens, or raise Throttled (the request must not be sent)."""
        operation = operation_of(method, path)
        wait = self.admit(provider, operation, bulk=_bulk.get(), connection=connection)
        if wait is not None:
            log.info(
                "provider_throttled",
                provider=provider,
                operation=operation,
                retry_in_s=round(wait, 2),
            )
            raise Throttled(provider, operation, wait)
        _sent.set(_sent.get() + 1)

    def admit(
        self, provider: str, operation: str, *, bulk: bool = False, connection: str = "platform"
    ) -> float | None:
        """None if the request may go now, else the seconds after which to try again."""
        try:
            paused_s = self._paused_for(connection_key(provider, connection))
            if paused_s > 0:
                return come_back_in(paused_s, None, self.rng)
            draws = draws_for(
                provider, operation, bulk=bulk, budgets=self.budgets, bulk_share=self.bulk_share
            )
            for draw in draws:
                item = self._item(draw.rate)
                key = connection_key(draw.key, connection)
                if not self._windows.hit(item, "provider", key):
                    reset = self._windows.get_window_stats(item, "provider", key).reset_time
                    return come_back_in(reset - time.time(), draw.rate, self.rng)
        except (redis.RedisError, StorageError) as exc:
            # Fail open: the provider's own 429s (and the pause they set) still slow us down.
            log.warning("provider_limiter_unavailable", error=type(exc).__name__)
        return None

    def _paused_for(self, provider: str) -> float:
        """Seconds left of the pause of `provider` (a `connection_key`; 0.0: not paused)."""
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

    def pause(self, provider: str, seconds: float | None, connection: str = "platform") -> None:
        """Hold every worker's requests to `provider` through `connection` for `seconds` (it
        answered 429). The clients' guard (`in_flight`) calls it for every 429 they meet."""
        ms = max(1, round((seconds if seconds and seconds > 0 else DEFAULT_PAUSE_S) * 1000))
        provider = connection_key(provider, connection)
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
