"""Properties of the pure domain rules, over inputs hypothesis chooses."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from worker.domain.contacts import (
    FINAL_STATUSES,
    ContactStatus,
    InvalidTransition,
    can_transition,
    check_transition,
)
from worker.domain.money import format_amount, from_cents, to_cents
from worker.domain.retry import RetryPolicy

RANK = {
    ContactStatus.PENDING: 0,
    ContactStatus.PROVISIONING: 1,
    ContactStatus.ACTIVE: 2,
    ContactStatus.GRACE_PERIOD: 2,
    ContactStatus.DELETING: 3,
    ContactStatus.FAILED: 4,
    ContactStatus.DELETED: 4,
}
# The one edge that goes back: the operator's explicit `provisioner jobs retry`.
OPERATOR_RETRY = (ContactStatus.FAILED, ContactStatus.PENDING)
# The one pair that moves both ways: a fee unpaid, then paid.
BILLING = {ContactStatus.ACTIVE, ContactStatus.GRACE_PERIOD}

statuses = st.sampled_from(list(ContactStatus))


@given(st.lists(statuses, max_size=30))
def test_automatic_transitions_never_go_backwards(targets):
    """Whatever the pipeline, a DELETE or the billing pass attempts, in any order, the status
    never moves back (only between active and grace_period, both live), and `failed` and
    `deleted` are final."""
    current = ContactStatus.PENDING
    for target in targets:
        if (current, target) == OPERATOR_RETRY:
            continue  # not something the pipeline can do
        try:
            check_transition(current, target)
        except InvalidTransition:
            assert not can_transition(current, target)
            continue
        assert RANK[target] > RANK[current] or {current, target} == BILLING
        assert current not in FINAL_STATUSES
        current = target
    if current in FINAL_STATUSES:
        for target in ContactStatus:
            if (current, target) != OPERATOR_RETRY:
                assert not can_transition(current, target)


@given(st.integers(min_value=0, max_value=10**12))
def test_cents_round_trip_through_decimal_strings(cents):
    assert to_cents(from_cents(cents)) == cents
    assert to_cents(format_amount(cents)) == cents
    assert Decimal(format_amount(cents)) == from_cents(cents)


@given(
    attempts=st.integers(min_value=1, max_value=20),
    elapsed=st.floats(min_value=0, max_value=2000, allow_nan=False),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=600, allow_nan=False)),
    seed=st.integers(),
)
def test_retry_delay_stays_within_its_bounds(attempts, elapsed, retry_after, seed):
    policy = RetryPolicy(base_s=1.0, max_s=60.0, max_attempts=8, max_total_s=900.0)
    wait = policy.delay(attempts, elapsed, retry_after, rng=random.Random(seed))
    if attempts >= policy.max_attempts:
        assert wait is None
        return
    if retry_after is not None:
        lowest, highest = retry_after, retry_after + 1.0
    else:
        highest = min(policy.max_s, policy.base_s * 2 ** (attempts - 1))
        lowest = highest / 10
    if wait is None:
        # Given up before the attempt budget only when this wait would overrun the total time.
        assert elapsed + highest > policy.max_total_s
        return
    assert elapsed + wait <= policy.max_total_s
    assert lowest <= wait <= highest  # never earlier than the server said, never immediate
