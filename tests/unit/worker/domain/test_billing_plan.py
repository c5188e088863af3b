"""The billing plan: months owed, oldest first, and the moves into and out of grace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.domain.billing import Billable, month_of, months_owed, next_month, plan_account, previous_month
from worker.domain.contacts import ContactStatus

NOW = datetime(2027, 3, 5, 12, tzinfo=UTC)


def contact(cid="ct_a", status="active", cents=150, through="2027-02", grace=None):
    return Billable(cid, status, cents, through, grace)


def test_months_cross_the_year_boundary_both_ways():
    assert next_month("2026-12") == "2027-01" and previous_month("2027-01") == "2026-12"
    assert months_owed("2026-11", "2027-02") == ["2026-12", "2027-01", "2027-02"]
    assert months_owed("2027-02", "2027-02") == []
    assert month_of(datetime(2027, 1, 31, 23, 59, tzinfo=UTC)) == "2027-01"


def test_each_contact_pays_its_oldest_month_first_while_the_credits_last():
    plan = plan_account(400, [contact("ct_a", through="2026-12"), contact("ct_b")], NOW, 14)
    assert [(f.contact_id, f.month) for f in plan.fees] == [("ct_a", "2027-01"), ("ct_a", "2027-02")]
    changes = {c.contact_id: c for c in plan.changes}
    assert changes["ct_a"].billed_through == "2027-02"
    assert changes["ct_a"].moved_to is ContactStatus.GRACE_PERIOD  # March unpaid
    assert changes["ct_b"].moved_to is ContactStatus.GRACE_PERIOD
    assert changes["ct_b"].grace_ends_at == NOW + timedelta(days=14)
    assert plan.charged_cents == 300


def test_a_grace_period_moves_once_then_back_when_paid_or_on_to_deleting_when_over():
    ends = NOW + timedelta(days=3)
    waiting = plan_account(0, [contact(status="grace_period", grace=ends)], NOW, 14)
    assert waiting.changes == []  # still owing, still in grace: nothing moves
    paid = plan_account(150, [contact(status="grace_period", grace=ends)], NOW, 14)
    assert paid.changes[0].moved_to is ContactStatus.ACTIVE and paid.changes[0].grace_ends_at is None
    over = plan_account(0, [contact(status="grace_period", grace=ends)], ends, 14)
    assert over.changes[0].moved_to is ContactStatus.DELETING


def test_a_deleting_contact_pays_what_it_can_and_a_free_type_owes_nothing():
    plan = plan_account(0, [contact(status="deleting"), contact("ct_f", cents=0, through="2026-10")], NOW, 14)
    assert plan.fees == []
    assert [(c.contact_id, c.billed_through, c.moved_to) for c in plan.changes] == [
        ("ct_f", "2027-03", None)
    ]
