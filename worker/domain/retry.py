"""Should a failed step try again, and when? One policy, no I/O.

Exponential backoff with full jitter for transient errors, the server's Retry-After for rate
limits, bounded by attempts and by total time since the contact started provisioning.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 1.0
    max_s: float = 60.0
    max_attempts: int = 8
    max_total_s: float = 900.0

    def delay(
        self,
        attempts: int,
        elapsed_s: float,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before attempt `attempts + 1`, or None to give up.

        `attempts` counts the tries made so far (>= 1); `elapsed_s` is the time spent since
        provisioning began.
        """
        if attempts >= self.max_attempts:
            return None
        if retry_after_s is not None and retry_after_s >= 0:
            # The server said when; a little jitter keeps a crowd from returning in step.
            wait = retry_after_s + (rng or random).uniform(0, min(1.0, self.base_s))
        else:
            ceiling = min(self.max_s, self.base_s * 2 ** (attempts - 1))
            # Full jitter, floored at a tenth of the ceiling so a retry is never immediate.
            wait = (rng or random).uniform(ceiling / 10, ceiling)
        if elapsed_s + wait > self.max_total_s:
            return None
        return wait
