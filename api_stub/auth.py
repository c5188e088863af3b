"""Bearer authentication, with a short in-process cache of key hash -> account."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from worker.store.accounts import hash_key

CACHE_TTL_S = 30.0
CACHE_MAX = 10_000


class Unauthenticated(Exception):
    pass


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing Authorization header; send 'Authorization: Bearer <key>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
    return token


class KeyCache:
    """Caches successful look-ups only; a revoked key stops working within CACHE_TTL_S."""

    def __init__(self, lookup: Callable[[str], int | None]) -> None:
        self._lookup = lookup
        self._cache: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def account_for(self, api_key: str) -> int:
        digest = hash_key(api_key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        account_id = self._lookup(api_key)
        if account_id is None:
            raise Unauthenticated("invalid API key")
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (account_id, now + CACHE_TTL_S)
        return account_id
