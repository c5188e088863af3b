"""Per-API-key rate limiting on Redis (the `limits` library), shared by every API process."""

from __future__ import annotations

import math
import time

import structlog
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

log = structlog.get_logger(__name__)


def limits_storage_uri(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


class RateLimiter:
    def __init__(self, redis_url: str, spec: str) -> None:
        self.items = parse_many(spec)
        self.limiter = SlidingWindowCounterRateLimiter(
            storage_from_string(limits_storage_uri(redis_url), socket_timeout=0.5)
        )

    def check(self, identity: str) -> int | None:
        """None if the request may go on, else the seconds to wait (Retry-After)."""
        try:
            for item in self.items:
                if not self.limiter.hit(item, "api", identity):
                    reset = self.limiter.get_window_stats(item, "api", identity).reset_time
                    return max(1, math.ceil(reset - time.time()))
        except Exception as exc:
            # Fail open: a Redis outage must not take the API down with it; the database
            # still guards credits and uniqueness.
            log.warning("rate_limit_unavailable", error=type(exc).__name__)
        return None
