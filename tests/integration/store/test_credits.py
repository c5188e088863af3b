"""Capture and release of a reservation happen exactly once, whatever retries the worker makes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from worker.store import credits
from worker.store.models import Account, Contact, LedgerEntry

COST = 200


def accept(db, tenant, contact_id="ct_test", assistant=0):
    """A contact accepted as the API does: row inserted and its cost reserved."""
    with db.write() as session:
        session.add(Contact(id=contact_id, account_id=tenant.account_id,
                            assistant_id=tenant.assistant_ids[assistant], contact_type="phone",
                            status="provisioning", request={}, setup_cost_cents=COST,
                            charged=False, reservation_seq=1, deliveries=0))
        session.flush()
        assert credits.try_reserve(session, tenant.account_id, COST)
        credits.record(session, tenant.account_id, contact_id, "reserve", COST,
                       credits.reservation_key(contact_id, 1))
    return contact_id


def account(db, tenant):
    with db.read() as session:
        row = session.get(Account, tenant.account_id)
        return row.balance_cents, row.reserved_cents


def settle(db, contact_id, fn):
    with db.write() as session:
        contact = session.get(Contact, contact_id)
        return fn(session, contact)


def test_capture_charges_once_however_often_it_runs(db, tenant):
    cid = accept(db, tenant)
    assert settle(db, cid, credits.capture) is True
    assert settle(db, cid, credits.capture) is False
    assert settle(db, cid, credits.capture) is False
    assert account(db, tenant) == (10_000 - COST, 0)
    with db.read() as session:
        assert session.get(Contact, cid).charged is True
        kinds = session.execute(select(LedgerEntry.kind).where(LedgerEntry.contact_id == cid)
                                .order_by(LedgerEntry.id)).scalars().all()
    assert kinds == ["reserve", "capture"]


def test_release_returns_the_reservation_once(db, tenant):
    cid = accept(db, tenant)
    assert settle(db, cid, credits.release) is True
    assert settle(db, cid, credits.release) is False
    assert account(db, tenant) == (10_000, 0)


def test_capture_and_release_exclude_each_other(db, make_tenant):
    tenant = make_tenant(assistants=2)
    captured = accept(db, tenant, "ct_a")
    released = accept(db, tenant, "ct_b", assistant=1)
    assert settle(db, captured, credits.capture) is True
    assert settle(db, captured, credits.release) is False
    assert settle(db, released, credits.release) is True
    assert settle(db, released, credits.capture) is False
    assert account(db, tenant) == (10_000 - COST, 0)


def test_concurrent_captures_charge_once(db, tenant):
    cid = accept(db, tenant)

    def capture(_):
        return settle(db, cid, credits.capture)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(capture, range(16)))
    assert results.count(True) == 1
    assert account(db, tenant) == (10_000 - COST, 0)


def test_reserve_refuses_beyond_available(db, make_tenant):
    tenant = make_tenant(credits_cents=300)
    with db.write() as session:
        assert credits.try_reserve(session, tenant.account_id, 200)
        assert not credits.try_reserve(session, tenant.account_id, 200)
        assert credits.try_reserve(session, tenant.account_id, 100)
        assert credits.balance(session, tenant.account_id).available_cents == 0


def test_top_up_with_the_same_key_applies_once(db, tenant):
    with db.write() as session:
        assert credits.top_up(session, tenant.account_id, 500, "topup:invoice-7")
    with db.write() as session:
        assert not credits.top_up(session, tenant.account_id, 500, "topup:invoice-7")
    assert account(db, tenant) == (10_500, 0)


FEE = 150


def with_fee(db, contact_id):
    with db.write() as session:
        session.get(Contact, contact_id).monthly_cost_cents = FEE


def kinds_of(db, contact_id):
    with db.read() as session:
        return session.execute(select(LedgerEntry.kind, LedgerEntry.month)
                               .where(LedgerEntry.contact_id == contact_id)
                               .order_by(LedgerEntry.id)).all()


def activation(commit):
    return lambda s, c: credits.capture_activation(s, c, "2026-12", commit=commit)


@pytest.mark.parametrize("commit", [False, True], ids=["then-commit", "commit-with-it"])
def test_an_activation_captures_and_charges_the_month_in_one_move(db, tenant, commit):
    cid = accept(db, tenant)
    with_fee(db, cid)
    activate = activation(commit)
    assert settle(db, cid, activate) is credits.Activation.PAID
    assert account(db, tenant) == (10_000 - COST - FEE, 0)
    assert settle(db, cid, activate) is credits.Activation.ALREADY_SETTLED  # once only
    assert account(db, tenant) == (10_000 - COST - FEE, 0)
    assert [tuple(k) for k in kinds_of(db, cid)] == [
        ("reserve", None), ("capture", None), ("monthly_fee", "2026-12")]


@pytest.mark.parametrize("commit", [False, True], ids=["then-commit", "commit-with-it"])
def test_an_activation_whose_month_is_already_paid_charges_only_the_setup(db, tenant, commit):
    cid = accept(db, tenant)
    with_fee(db, cid)
    with db.write() as session:  # the month's fee row, written (and paid) before
        credits.record(session, tenant.account_id, cid, "monthly_fee", FEE,
                       f"fee:{cid}:2026-12", "2026-12")
    assert settle(db, cid, activation(commit)) is credits.Activation.PAID
    assert account(db, tenant) == (10_000 - COST, 0)  # the fee is not taken a second time


def test_an_activation_without_credits_for_the_month_captures_and_leaves_no_fee(db, make_tenant):
    tenant = make_tenant(credits_cents=COST + FEE - 1)
    cid = accept(db, tenant)
    with_fee(db, cid)
    assert settle(db, cid, lambda s, c: credits.capture_activation(s, c, "2026-12")) is (
        credits.Activation.FEE_UNPAID)
    assert account(db, tenant) == (FEE - 1, 0)
    assert [k.kind for k in kinds_of(db, cid)] == ["reserve", "capture"]  # no unpaid fee row


def test_an_activation_committed_with_its_balance_commits_nothing_when_the_fee_is_not_covered(
    db, make_tenant
):
    tenant = make_tenant(credits_cents=COST + FEE - 1)
    cid = accept(db, tenant)
    with_fee(db, cid)
    with pytest.raises(credits.FeeNotCovered):
        settle(db, cid, activation(commit=True))
    assert account(db, tenant) == (COST + FEE - 1, COST)  # still reserved, nothing captured
    assert [k.kind for k in kinds_of(db, cid)] == ["reserve"]
    with db.read() as session:
        assert session.get(Contact, cid).charged is False
    # Run again the careful way: captured, the fee left unpaid.
    assert settle(db, cid, activation(commit=False)) is credits.Activation.FEE_UNPAID
    assert account(db, tenant) == (FEE - 1, 0)


def test_concurrent_activations_committed_with_the_balance_never_overdraw(db, make_tenant):
    """Eight contacts of one account activate at once, each committing with its balance; the
    credits cover the fees of three. Each that cannot pay commits nothing and settles again
    without the fee, as the worker does."""
    tenant = make_tenant(credits_cents=8 * COST + 3 * FEE + FEE // 2, assistants=8)
    ids = [accept(db, tenant, f"ct_{i}", assistant=i) for i in range(8)]
    for cid in ids:
        with_fee(db, cid)

    def activate(cid):
        try:
            return settle(db, cid, activation(commit=True))
        except credits.FeeNotCovered:
            return settle(db, cid, activation(commit=False))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(activate, ids))
    assert sorted(r.value for r in results) == ["fee_unpaid"] * 5 + ["paid"] * 3
    assert account(db, tenant) == (FEE // 2, 0)
    with db.read() as session:
        fees = session.execute(select(LedgerEntry.contact_id)
                               .where(LedgerEntry.kind == "monthly_fee")).scalars().all()
    assert len(fees) == 3


def test_the_account_refuses_an_available_balance_below_zero(db, make_tenant):
    tenant = make_tenant(credits_cents=100)
    with pytest.raises(IntegrityError, match="ck_accounts_available_not_negative"), \
            db.write() as session:
        session.execute(update(Account).where(Account.id == tenant.account_id)
                        .values(reserved_cents=101))
    assert account(db, tenant) == (100, 0)
