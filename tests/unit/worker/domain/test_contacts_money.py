from __future__ import annotations

from decimal import Decimal

import pytest

from worker.domain.contacts import ContactStatus as S
from worker.domain.contacts import can_transition, check_transition
from worker.domain.errors import InvalidTransition
from worker.domain.ids import new_id
from worker.domain.money import format_amount, to_cents


def test_status_only_moves_forward():
    assert can_transition(S.PENDING, S.PROVISIONING)
    assert can_transition(S.PROVISIONING, S.ACTIVE)
    assert can_transition(S.PROVISIONING, S.FAILED)
    for current, target in [(S.ACTIVE, S.PENDING), (S.ACTIVE, S.FAILED),
                            (S.PROVISIONING, S.PENDING), (S.FAILED, S.ACTIVE)]:
        with pytest.raises(InvalidTransition):
            check_transition(current, target)


def test_money_is_exact_cents():
    assert to_cents(Decimal("25.00")) == 2500
    assert to_cents("0.10") == 10
    assert format_amount(2505) == "25.05"
    for bad in ["0.001", "NaN", "abc", "Infinity"]:
        with pytest.raises(ValueError):
            to_cents(bad)


def test_ids_are_prefixed_unique_and_time_ordered():
    ids = [new_id("ct") for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.startswith("ct_") and len(i) == 29 for i in ids)
