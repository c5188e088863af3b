"""Per-API-key rate limiting on Redis (the `limits` library), shared by every API process."""

from __future__ import annotations

import math
import time

import structlog
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from worker.redis_conn import RedisTarget, target_of

log = structlog.get_logger(__name__)


class RateLimiter:
    def __init__(self, redis: str | RedisTarget, spec: str, *, namespace: str = "api") -> None:
        self.items = parse_many(spec)
        self.namespace = namespace
        uri, options = target_of(redis).limits_storage(socket_timeout=0.5)
        self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(uri, **options))

    def check(self, identity: str) -> int | None:
        """None if the request may go on, else the seconds to wait (Retry-After)."""
        return self.check_many(identity, 1)[0]

    def check_many(self, identity: str, count: int) -> list[int | None]:
        """`check` for `count` requests of one identity at once, in order: what each would
        have got alone, with one Redis round trip per limit while all of them fit.

        Each limit is hit once with the cost of the requests still going; when that does not
        fit, one at a time until one is refused, so exactly as many pass as would have one by
        one. As one by one, a request refused by a later limit still counts against the
        earlier ones.
        """
        going = count
        retry_after: int | None = None
        try:
            for item in self.items:
                if not going or self.limiter.hit(item, self.namespace, identity, cost=going):
                    continue
                passed = 0
                while passed < going and self.limiter.hit(item, self.namespace, identity):
                    passed += 1
                if passed < going:
                    reset = self.limiter.get_window_stats(item, self.namespace, identity).reset_time
                    retry_after = max(1, math.ceil(reset - time.time()))
                going = passed
        except Exception as exc:
            # Fail open: a Redis outage must not take the API down with it; the database
            # still guards credits and uniqueness.
            log.warning("rate_limit_unavailable", error=type(exc).__name__)
            return [None] * count
        return [None] * going + [retry_after] * (count - going)


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
