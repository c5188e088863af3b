"""Who is calling: an API key to its account, with a short in-process cache."""

from __future__ import annotations

import threading
import time

from worker.domain.api_keys import hash_key
from worker.store import accounts
from worker.store.db import Database

CACHE_TTL_S = 30.0
CACHE_MAX = 10_000


class Unauthenticated(Exception):
    """No key, a malformed one, or one that names no account (a 401)."""


class Authenticator:
    """Caches successful look-ups only; a revoked key stops working within CACHE_TTL_S."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def lookup(self, api_key: str) -> int | None:
        """The key's account, from the database."""
        with self.db.read() as session:
            return accounts.account_for_key(session, api_key)

    def cached(self, api_key: str) -> int | None:
        """The key's account if a look-up found it within CACHE_TTL_S, else None (then ask
        `account_for`, which reads the database). Never blocks on I/O."""
        return self._cached(hash_key(api_key), time.monotonic())

    def _cached(self, digest: str, now: float) -> int | None:
        with self._lock:
            hit = self._cache.get(digest)
        return hit[0] if hit is not None and hit[1] > now else None

    def account_for(self, api_key: str) -> int:
        digest = hash_key(api_key)
        now = time.monotonic()
        cached = self._cached(digest, now)
        if cached is not None:
            return cached
        account_id = self.lookup(api_key)
        if account_id is None:
            raise Unauthenticated("invalid API key")
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (account_id, now + CACHE_TTL_S)
        return account_id

    @staticmethod
    def rate_key(api_key: str) -> str:
        """What the rate limiter counts a request against: the key's hash, never the key."""
        return hash_key(api_key)
