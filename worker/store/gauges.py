"""What the operational gauges read from the database at scrape time, each by one index probe
or one bounded index range, so that a scrape costs the same on a million rows as on ten."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.domain.contacts import ContactStatus
from worker.domain.webhooks import DeliveryStatus
from worker.store.models import Contact, WebhookDelivery, WorkerHeartbeat


def oldest_pending_since(session: Session) -> datetime | None:
    """When the contact waiting longest for its first runner became pending (accepted, or
    sent back by an operator's retry); None when none waits. `ix_contacts_pending_since`
    (a partial index of the pending contacts only) answers it with one probe."""
    return session.execute(oldest_pending_query()).scalar_one()


def oldest_pending_query() -> Any:
    return select(func.min(Contact.updated_at)).where(Contact.status == ContactStatus.PENDING.value)


def webhook_backlog(session: Session, now: datetime, cap: int) -> int:
    """Deliveries that are due and not yet delivered (pending, their attempt's time come),
    counted up to `cap`: an index-only range of `ix_webhook_deliveries_due` that stops there."""
    return int(session.execute(webhook_backlog_query(now, cap)).scalar_one())


def webhook_backlog_query(now: datetime, cap: int) -> Any:
    due = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING.value,
            WebhookDelivery.next_attempt_at <= now,
        )
        .limit(cap)
        .subquery()
    )
    return select(func.count()).select_from(due)


def live_workers(session: Session, now: datetime, dead_after_s: float) -> int:
    """Worker processes whose heartbeat is younger than `dead_after_s` (the table holds one
    row per worker process seen in the last day: it is small by construction)."""
    cutoff = now - timedelta(seconds=dead_after_s)
    query: Any = select(func.count()).where(WorkerHeartbeat.beat_at >= cutoff)
    return int(session.execute(query).scalar_one())
