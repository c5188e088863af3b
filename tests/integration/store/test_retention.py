"""The retention job deletes what has passed its window, in chunks, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from worker.app.retention import RetentionService
from worker.store.models import (
    Event,
    IdempotencyRecord,
    LedgerEntry,
    WebhookAttempt,
    WebhookDelivery,
)

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def delivery(db, tenant) -> str:
    with db.write() as session:
        session.add(
            Event(id="ev_1", account_id=tenant.account_id, contact_id="ct_1",
                  type="contact.active", payload={}, created_at=NOW - timedelta(days=90),
                  dispatched_at=NOW - timedelta(days=90))
        )
        session.flush()
        session.add(
            WebhookDelivery(id="wd_1", event_id="ev_1", account_id=tenant.account_id,
                            contact_id="ct_1", type="contact.active", status="succeeded",
                            attempts=7, created_at=NOW - timedelta(days=90),
                            updated_at=NOW - timedelta(days=1))
        )
    return "wd_1"


def add_attempts(db, delivery: str, *ages_days: float) -> None:
    with db.write() as session:
        for age in ages_days:
            session.add(
                WebhookAttempt(delivery_id=delivery, attempted_at=NOW - timedelta(days=age),
                               outcome="http_error", status_code=500, latency_ms=5)
            )


def count(db, model) -> int:
    with db.read() as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_attempts_older_than_the_window_are_deleted_in_chunks_and_newer_kept(
    db, make_settings, delivery
):
    add_attempts(db, delivery, 90, 60, 45, 31, 30.5, 29, 1)
    settings = make_settings(webhook_attempt_retention_days=30, retention_chunk=2)

    purged = RetentionService(db, settings).run(NOW)

    assert purged.webhook_attempts == 5
    with db.read() as session:
        left = session.execute(select(WebhookAttempt.attempted_at)).scalars().all()
    assert sorted(NOW - at for at in left) == [timedelta(days=1), timedelta(days=29)]
    assert count(db, WebhookDelivery) == 1  # the delivery and its event are kept
    assert count(db, Event) == 1


def test_expired_idempotency_keys_are_deleted_and_live_ones_kept(db, make_settings, tenant):
    with db.write() as session:
        for i, expires in enumerate([NOW - timedelta(hours=2), NOW, NOW + timedelta(hours=1)]):
            session.add(
                IdempotencyRecord(account_id=tenant.account_id, key=f"k{i}", fingerprint="f",
                                  completed=True, response_status=202, response_body={},
                                  expires_at=expires)
            )
    settings = make_settings(retention_chunk=1)

    purged = RetentionService(db, settings).run(NOW)

    assert purged.idempotency_keys == 2
    with db.read() as session:
        assert session.execute(select(IdempotencyRecord.key)).scalars().all() == ["k2"]


def test_ledger_rows_are_never_deleted_however_old(db, make_settings, tenant, delivery):
    with db.write() as session:
        session.add(
            LedgerEntry(account_id=tenant.account_id, contact_id="ct_1", kind="capture",
                        amount_cents=100, key="capture:ct_1:1",
                        created_at=NOW - timedelta(days=3650))
        )
    before = count(db, LedgerEntry)
    add_attempts(db, delivery, 400)

    RetentionService(db, make_settings(webhook_attempt_retention_days=1)).run(NOW)

    assert count(db, LedgerEntry) == before
    assert count(db, WebhookAttempt) == 0
