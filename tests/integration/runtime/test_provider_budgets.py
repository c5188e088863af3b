"""The shared provider budgets on real Redis: shared by limiter instances (workers), the bulk
share leaves room for interactive work, a provider's 429 pauses everyone."""

from __future__ import annotations

import time

from worker.domain.ratelimit import parse_budgets
from worker.runtime.budgets import PAUSE_RECHECK_S, ProviderLimiter


def limiter(redis_url, spec, share=1.0):
    return ProviderLimiter(redis_url, parse_budgets(spec), bulk_share=share)


def test_two_workers_share_one_budget(redis_url):
    one, two = limiter(redis_url, "twilio=4/2 seconds"), limiter(redis_url, "twilio=4/2 seconds")
    admitted = [x.admit("twilio", "number_buy") for x in (one, two, one, two)]
    assert admitted == [None] * 4
    wait = two.admit("twilio", "number_search")
    assert wait is not None and 0 < wait <= 2 + 2  # the window's reset, plus the spread
    # Other providers and unbudgeted operations are not held back.
    assert one.admit("google", "user_insert") is None


def test_bulk_work_leaves_the_rest_of_the_budget_to_interactive_work(redis_url):
    gate = limiter(redis_url, "google=10/minute", share=0.6)
    bulk = [gate.admit("google", "user_insert", bulk=True) for _ in range(8)]
    assert bulk[:6] == [None] * 6 and all(w is not None for w in bulk[6:])
    interactive = [gate.admit("google", "user_insert") for _ in range(5)]
    assert interactive[:4] == [None] * 4 and interactive[4] is not None


def test_an_operation_budget_applies_beside_the_provider_budget(redis_url):
    gate = limiter(redis_url, "twilio=100/second;twilio.number_buy=2/minute")
    assert [gate.admit("twilio", "number_buy") for _ in range(3)][2] is not None
    assert gate.admit("twilio", "number_search") is None


def test_a_pause_holds_every_worker_until_it_ends(redis_url):
    one, two = limiter(redis_url, ""), limiter(redis_url, "")
    one.pause("twilio", 0.5)
    wait = two.admit("twilio", "number_buy")
    assert wait is not None and 0 < wait <= 0.5 + 1
    assert two.admit("google", "user_get") is None
    one.pause("twilio", 0.01)  # a shorter pause never shortens a longer one
    assert two.admit("twilio", "number_buy") is not None
    time.sleep(0.6)
    assert two.admit("twilio", "number_buy") is None


def test_a_pause_set_elsewhere_is_seen_within_the_recheck_interval(redis_url):
    one, two = limiter(redis_url, ""), limiter(redis_url, "")
    assert two.admit("twilio", "number_buy") is None  # found not paused: believed a while
    one.pause("twilio", 1)
    assert one.admit("twilio", "number_buy") is not None  # the process that paused: at once
    time.sleep(PAUSE_RECHECK_S + 0.05)
    wait = two.admit("twilio", "number_buy")
    assert wait is not None and 0 < wait <= 1 + 1  # what is left of the pause, plus jitter


def test_without_redis_the_limiter_fails_open(tmp_path):
    gate = limiter(f"unix://{tmp_path}/nothing.sock", "twilio=1/minute")
    assert gate.admit("twilio", "number_buy") is None
    assert gate.admit("twilio", "number_buy") is None
    gate.pause("twilio", 5)  # logged, not raised
