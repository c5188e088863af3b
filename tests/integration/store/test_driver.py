"""The hot statements run on the driver (worker.store.driver) give what SQLAlchemy gives, in
the caller's transaction, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, select, update
from support.pipeline import submit

from worker.store import driver
from worker.store import pipeline as store
from worker.store.models import ContactStep

PHONE = {"contact_type": "phone", "phone_country": "US"}
_steps = ContactStep.__table__
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def journal(service, tenant, db, **detail):
    """A contact and its two journal rows inserted by the driver; their ids, in order."""
    cid = submit(service, tenant, PHONE)
    params = {}
    for i, name in enumerate(["find_number", "buy_number"]):
        params.update({f"p{i}_contact_id": cid, f"p{i}_position": i, f"p{i}_name": name,
                       f"p{i}_status": "pending", f"p{i}_attempts": 0,
                       f"p{i}_provider_id": None, f"p{i}_detail": detail or None,
                       f"p{i}_updated_at": NOW})
    with db.write() as session:
        made = driver.rows(session.connection(), store.journal_stmt(2), params)
    assert [r.name for r in made] == ["find_number", "buy_number"]
    return cid, [r.id for r in made]


def test_rows_match_what_sqlalchemy_returns(service, tenant, db):
    cid, _ = journal(service, tenant, db, candidates=["+441234"])
    statement = store._SELECT_STEPS
    with db.read() as session:
        connection = session.connection()
        ours = [r._asdict() for r in driver.rows(connection, statement, {"p_contact_id": cid})]
        theirs = [dict(r._mapping) for r in connection.execute(statement, {"p_contact_id": cid})]
    assert ours == theirs
    assert ours[0]["detail"] == {"candidates": ["+441234"]}  # JSON in, JSON out
    assert ours[0]["updated_at"] == NOW and ours[0]["updated_at"].tzinfo is not None


def test_a_json_parameter_bound_as_null_is_sql_null(service, tenant, db):
    cid, _ = journal(service, tenant, db)
    with db.read() as session:
        nulls = session.execute(
            select(ContactStep.id).where(ContactStep.contact_id == cid,
                                         ContactStep.detail.is_(None))
        ).all()
    assert len(nulls) == 2


def test_count_is_the_rows_matched_and_writes_stay_in_the_callers_transaction(
    service, tenant, db
):
    cid, ids = journal(service, tenant, db)
    bump = (
        update(_steps)
        .where(_steps.c.contact_id == bindparam("p_cid"))
        .values(attempts=_steps.c.attempts + 1)
    )
    with pytest.raises(RuntimeError), db.write() as session:
        assert driver.count(session.connection(), bump, {"p_cid": cid}) == 2
        raise RuntimeError("roll back")
    with db.write() as session:
        assert driver.count(session.connection(), bump, {"p_cid": "ct_missing"}) == 0
    with db.read() as session:
        attempts = session.execute(
            select(ContactStep.attempts).where(ContactStep.contact_id == cid)
        ).scalars().all()
    assert attempts == [0, 0]


def test_a_lease_taken_through_the_driver_reads_back_as_utc(service, tenant, db):
    cid = submit(service, tenant, PHONE)
    now = datetime.now(UTC)
    with db.write() as session:
        lease = store.take_lease(session, cid, "runner", now, 60)
    assert lease is not None
    assert lease.contact.lease_expires_at == now + timedelta(seconds=60)
    assert lease.contact.lease_expires_at.utcoffset() == timedelta(0)
    assert lease.contact.request["phone_country"] == "US"
    assert [s.name for s in lease.steps.values()] == ["find_number", "buy_number"]


def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it(service, tenant, db):
    cid = submit(service, tenant, PHONE)
    with pytest.raises(Exception, match="naive datetime"), db.write() as session:
        store.take_lease(session, cid, "runner", datetime(2026, 12, 3), 60)
