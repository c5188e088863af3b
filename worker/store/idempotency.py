"""Stored Idempotency-Key records: claim a key, complete it with its response, or free it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from worker.domain.errors import IdempotencyKeyInFlight
from worker.domain.idempotency import Decision, KeyRecord, decide
from worker.store.models import IdempotencyRecord
from worker.store.sql import insert_if_absent


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def claim(
    session: Session,
    account_id: int,
    key: str,
    fingerprint: str,
    now: datetime,
    ttl: timedelta,
    lock_timeout: timedelta,
) -> StoredResponse | None:
    """Take the key for this request, or return the stored response to replay.

    Raises IdempotencyKeyReused / IdempotencyKeyInFlight (domain errors) for the refusals.
    """
    values = {
        "account_id": account_id,
        "key": key,
        "fingerprint": fingerprint,
        "completed": False,
        "locked_at": now,
        "expires_at": now + ttl,
    }
    if insert_if_absent(session, IdempotencyRecord.__table__, values, ["account_id", "key"]):  # type: ignore[arg-type]
        return None
    row = session.execute(
        select(IdempotencyRecord).where(
            IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key
        )
    ).scalar_one()
    record = KeyRecord(row.fingerprint, row.completed, row.locked_at, row.expires_at)
    decision = decide(record, fingerprint, now, lock_timeout)
    if decision is Decision.REPLAY:
        return StoredResponse(
            row.response_status or 200, row.response_body or {}, row.response_headers or {}
        )
    # PROCEED over an expired record, or TAKE_OVER from a first attempt that died: overwrite,
    # conditional on nobody else having done so since we read it.
    taken = session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == row.id, IdempotencyRecord.locked_at == row.locked_at)
        .values(
            fingerprint=fingerprint,
            completed=False,
            response_status=None,
            response_body=None,
            response_headers=None,
            locked_at=now,
            expires_at=now + ttl,
        )
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise IdempotencyKeyInFlight("a request with this Idempotency-Key is still being processed")
    return None


def complete(session: Session, account_id: int, key: str, response: StoredResponse) -> None:
    session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key)
        .values(
            completed=True,
            response_status=response.status,
            response_body=response.body,
            response_headers=response.headers,
        )
    )


def release(session: Session, account_id: int, key: str) -> None:
    """Free the key after a request that was refused, so the client may correct and retry."""
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.account_id == account_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.completed.is_(False),
        )
    )


def purge_expired(session: Session, now: datetime) -> int:
    result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
    return result.rowcount  # type: ignore[attr-defined,no-any-return]
