from __future__ import annotations

import random

from worker.domain.retry import RetryPolicy

POLICY = RetryPolicy(base_s=1, max_s=30, max_attempts=5, max_total_s=100)


def test_backoff_grows_exponentially_within_jitter_bounds():
    rng = random.Random(7)
    for attempts, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8)]:
        for _ in range(50):
            wait = POLICY.delay(attempts, 0, rng=rng)
            assert ceiling / 10 <= wait <= ceiling


def test_backoff_is_capped():
    policy = RetryPolicy(base_s=1, max_s=30, max_attempts=50, max_total_s=10_000)
    assert all(policy.delay(20, 0) <= 30 for _ in range(100))


def test_retry_after_is_honoured():
    wait = POLICY.delay(1, 0, retry_after_s=12)
    assert 12 <= wait <= 13


def test_gives_up_after_max_attempts_or_total_time():
    assert POLICY.delay(5, 0) is None
    assert POLICY.delay(1, 99.99, retry_after_s=5) is None
    assert POLICY.delay(1, 50) is not None
