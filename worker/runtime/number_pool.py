"""Candidate phone numbers shared by every worker: one search serves many purchases.

A phone contact used to search Twilio's AvailablePhoneNumbers list and then buy one of the
numbers offered: two provider calls. The pool keeps the numbers one search offers in Redis, so
the next contacts of that country and list take a candidate each and only buy.

- One sorted set per (Twilio account, country, number list, address requirement), scored by
  the Redis time at which a search saw each number. A candidate older than `max_age_s` is
  dropped when met (another buyer may have it by now): Twilio holds nothing for a search.
- One script takes the freshest acceptable candidate (ZPOPMAX over the sets the contact's
  documents meet, in their order) and records it as taken, so no candidate goes to two
  takers; a later search that offers a number taken within `max_age_s` does not put it back
  (its buyer may still be mid-purchase).
- Below `low_water` candidates, one background search (a Redis lock across every worker)
  tops the sets up; the takers do not wait for it.
- An empty pool (a cold start, a country seen for the first time): the taker that gets the
  lock searches inline, keeps one number and shares the rest; the others look again every
  few milliseconds for up to `wait_s`, then search for themselves.
- A 21422 (sold since the search) takes the next candidate (the number client does).
- Redis unreachable: each contact searches for itself, as without a pool.

The purchase still looks up the contact's tag before it buys again (that makes retries safe);
the pool only decides which numbers are offered to it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis
import structlog

from worker.providers.twilio_numbers import AvailableNumber
from worker.redis_conn import RedisTarget, target_of
from worker.settings import Settings

log = structlog.get_logger(__name__)

# Twilio's address requirements, in the order a taker prefers them: a number needing no
# address first, so numbers needing one stay for the contacts that have one.
REQUIREMENTS = ("none", "any", "local", "foreign")

# KEYS: the acceptable sets in order, then the taken set. ARGV: max age (ms), taken TTL (ms).
# Returns {number or false, candidates left in the acceptable sets}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = now - tonumber(ARGV[1])
local taken = KEYS[#KEYS]
local number = false
local left = 0
for i = 1, #KEYS - 1 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. oldest)
  if not number then
    local popped = redis.call('ZPOPMAX', KEYS[i])
    if popped[1] then number = popped[1] end
  end
  left = left + redis.call('ZCARD', KEYS[i])
end
if number then
  redis.call('ZADD', taken, now, number)
  redis.call('ZREMRANGEBYSCORE', taken, '-inf', '(' .. oldest)
  redis.call('PEXPIRE', taken, ARGV[2])
end
return {number, left}
"""

# KEYS: the four requirement sets (REQUIREMENTS order), then the taken set.
# ARGV: max age (ms), then pairs of (number, requirement index 1-4). Returns how many were
# added. A number taken within the max age is not put back.
_ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = now - tonumber(ARGV[1])
local taken = KEYS[#KEYS]
local added = 0
for i = 2, #ARGV, 2 do
  local at = redis.call('ZSCORE', taken, ARGV[i])
  if not at or tonumber(at) < oldest then
    local key = KEYS[tonumber(ARGV[i + 1])]
    redis.call('ZADD', key, now, ARGV[i])
    added = added + 1
  end
end
for i = 1, #KEYS - 1 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return added
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Search = Callable[[], list[AvailableNumber]]


@dataclass(frozen=True)
class PoolKey:
    """Which candidates a contact can use: its Twilio account, country and number list."""

    connection: str
    country: str
    number_list: str

    def base(self) -> str:
        # One hash tag per pool: its sets, taken set and lock share a Redis Cluster slot.
        return (
            f"provisioner:numbers:{{{self.connection}:{self.country.upper()}:{self.number_list}}}"
        )

    def requirement_key(self, requirement: str) -> str:
        return f"{self.base()}:{requirement}"

    @property
    def taken_key(self) -> str:
        return f"{self.base()}:taken"

    @property
    def lock_key(self) -> str:
        return f"{self.base()}:refill"


class Unmet(Exception):
    """A search offered no number whose address requirement the contact meets; the
    requirements of those it did offer (empty: it offered none)."""

    def __init__(self, requirements: Sequence[str]) -> None:
        super().__init__(", ".join(requirements))
        self.requirements = sorted(set(requirements))


class NumberPool:
    def __init__(
        self,
        url: str | RedisTarget,
        *,
        search_size: int = 50,
        low_water: int = 50,
        max_age_s: float = 300.0,
        wait_s: float = 2.0,
    ) -> None:
        self.search_size = search_size
        self.low_water = low_water
        self.max_age_ms = max(1, round(max_age_s * 1000))
        self.wait_s = wait_s
        self._redis = target_of(url).client(socket_timeout=1.0, socket_connect_timeout=0.5)
        self._take = self._redis.register_script(_TAKE)
        self._add = self._redis.register_script(_ADD)
        self._unlock = self._redis.register_script(_UNLOCK)
        # The lock outlives the longest search (it is deleted when the search ends).
        self.lock_ms = 30_000
        self._refills = ThreadPoolExecutor(max_workers=1, thread_name_prefix="number-pool")
        self._pending: set[Future[None]] = set()
        self._guard = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> NumberPool | None:
        if not settings.number_pool:
            return None
        return cls(
            RedisTarget.from_settings(settings),
            search_size=settings.number_pool_search_size,
            low_water=settings.number_pool_low_water,
            max_age_s=settings.number_pool_max_age_s,
            wait_s=settings.number_pool_wait_s,
        )

    # --- taking -------------------------------------------------------------------------

    def take(self, key: PoolKey, acceptable: Sequence[str], search: Search) -> str | None:
        """One candidate of `key` whose address requirement is in `acceptable`, used by no
        other taker; None when Redis cannot be reached (the caller searches for itself).

        Raises `Unmet` when this taker's search found no acceptable number (none at all:
        `requirements` empty), and whatever `search` raises."""
        wanted = [r for r in REQUIREMENTS if r in acceptable]
        try:
            number, left = self._take_one(key, wanted)
            if number is not None:
                if left < self.low_water:
                    self._refill_later(key, search)
                return number
            return self._take_cold(key, wanted, search)
        except redis.RedisError as exc:
            log.warning("number_pool_unavailable", error=type(exc).__name__)
            return None

    def _take_one(self, key: PoolKey, wanted: Sequence[str]) -> tuple[str | None, int]:
        if not wanted:
            return None, 0
        keys = [key.requirement_key(r) for r in wanted] + [key.taken_key]
        number, left = self._take(keys=keys, args=[self.max_age_ms, self.max_age_ms])
        if isinstance(number, bytes):
            number = number.decode()
        return (number or None), int(left)

    def _take_cold(self, key: PoolKey, wanted: Sequence[str], search: Search) -> str | None:
        deadline = time.monotonic() + self.wait_s
        pause = 0.005
        while True:
            token = self._lock(key)
            if token is not None:
                try:
                    found = search()
                    self._put(key, found)
                finally:
                    self._release(key, token)
                number, _ = self._take_one(key, wanted)
                if number is not None:
                    return number
                if not any(n.address_requirements in wanted for n in found):
                    raise Unmet([n.address_requirements for n in found])
                # Every acceptable number went to other takers meanwhile: look again.
            elif time.monotonic() >= deadline:
                return None  # the searcher is slow or gone: search for ourselves
            else:
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
            number, _ = self._take_one(key, wanted)
            if number is not None:
                return number

    # --- filling ------------------------------------------------------------------------

    def _put(self, key: PoolKey, found: Sequence[AvailableNumber]) -> int:
        pairs: list[str | int] = []
        for n in found:
            requirement = (
                n.address_requirements if n.address_requirements in REQUIREMENTS else "any"
            )
            pairs += [n.phone_number, REQUIREMENTS.index(requirement) + 1]
        if not pairs:
            return 0
        keys = [key.requirement_key(r) for r in REQUIREMENTS] + [key.taken_key]
        return int(self._add(keys=keys, args=[self.max_age_ms, *pairs]))

    def _lock(self, key: PoolKey) -> str | None:
        token = uuid.uuid4().hex
        return token if self._redis.set(key.lock_key, token, nx=True, px=self.lock_ms) else None

    def _release(self, key: PoolKey, token: str) -> None:
        with contextlib.suppress(redis.RedisError):  # else the lock expires by itself
            self._unlock(keys=[key.lock_key], args=[token])

    def _refill_later(self, key: PoolKey, search: Search) -> None:
        with self._guard:
            if self._pending:
                return  # this process already has a refill under way
            future = self._refills.submit(self._refill, key, search)
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._guard:
            self._pending.discard(future)

    def _refill(self, key: PoolKey, search: Search) -> None:
        try:
            token = self._lock(key)
            if token is None:
                return  # another worker is searching
            try:
                added = self._put(key, search())
            finally:
                self._release(key, token)
            log.debug("number_pool_refilled", country=key.country, added=added)
        except Exception as exc:  # a failed refill leaves the next taker to search
            log.warning("number_pool_refill_failed", country=key.country, error=repr(exc))

    # --- lifecycle ----------------------------------------------------------------------

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait for the background searches under way (tests count requests after them)."""
        with self._guard:
            pending = list(self._pending)
        for future in pending:
            future.result(timeout=timeout_s)

    def close(self) -> None:
        self._refills.shutdown(wait=True, cancel_futures=True)
        self._redis.close()
