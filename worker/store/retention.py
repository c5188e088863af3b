"""What may be deleted once its window has passed, a chunk at a time: webhook delivery
attempts and idempotency keys. Never ledger rows, contacts, their steps or events: the books
and a contact's record are kept for good."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker.store.models import IdempotencyRecord, WebhookAttempt


def delete_attempts_before(session: Session, cutoff: datetime, limit: int) -> int:
    """Deletes at most `limit` webhook attempts made before `cutoff`, oldest first; how many."""
    oldest = (
        select(WebhookAttempt.id)
        .where(WebhookAttempt.attempted_at < cutoff)
        .order_by(WebhookAttempt.attempted_at)
        .limit(limit)
    )
    result = session.execute(
        delete(WebhookAttempt)
        .where(WebhookAttempt.id.in_(oldest.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount  # type: ignore[attr-defined,no-any-return]


def delete_expired_keys(session: Session, now: datetime, limit: int) -> int:
    """Deletes at most `limit` idempotency keys expired by `now`; how many."""
    expired = (
        select(IdempotencyRecord.id)
        .where(IdempotencyRecord.expires_at <= now)
        .order_by(IdempotencyRecord.expires_at)
        .limit(limit)
    )
    result = session.execute(
        delete(IdempotencyRecord)
        .where(IdempotencyRecord.id.in_(expired.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount  # type: ignore[attr-defined,no-any-return]
