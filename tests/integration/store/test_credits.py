"""Capture and release of a reservation happen exactly once, whatever retries the worker makes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

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
