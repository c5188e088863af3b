"""Webhook endpoints, deliveries and attempts: the claims, the schedule and the relay's queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.orm import Session

from worker.domain.ids import new_id
from worker.domain.webhooks import GONE, DeliveryStatus, Outcome, attempts_allowed, next_delay
from worker.store.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from worker.store.sql import insert_if_absent

_deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]


# --- endpoints -----------------------------------------------------------------------------


def get_endpoint(session: Session, account_id: int) -> WebhookEndpoint | None:
    return session.get(WebhookEndpoint, account_id)


def set_endpoint(
    session: Session, account_id: int, url: str, new_secret: str, now: datetime
) -> tuple[WebhookEndpoint, bool]:
    """Set the URL (re-enabling an endpoint disabled by a 410); `new_secret` is used only if
    the endpoint is new. True when it was created."""
    endpoint = session.get(WebhookEndpoint, account_id, with_for_update=True)
    if endpoint is None:
        endpoint = WebhookEndpoint(
            account_id=account_id, url=url, secret=new_secret, created_at=now, updated_at=now
        )
        session.add(endpoint)
        session.flush()
        return endpoint, True
    endpoint.url = url
    endpoint.disabled_at = None
    endpoint.updated_at = now
    return endpoint, False


def delete_endpoint(session: Session, account_id: int) -> bool:
    endpoint = session.get(WebhookEndpoint, account_id, with_for_update=True)
    if endpoint is None:
        return False
    session.delete(endpoint)
    return True


def rotate_secret(
    session: Session, account_id: int, new_secret: str, now: datetime, grace_s: float
) -> WebhookEndpoint | None:
    endpoint = session.get(WebhookEndpoint, account_id, with_for_update=True)
    if endpoint is None:
        return None
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + timedelta(seconds=grace_s)
    endpoint.secret = new_secret
    endpoint.updated_at = now
    return endpoint


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The current secret, then the previous one while its grace period lasts."""
    found = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        found.append(endpoint.previous_secret)
    return found


def _enabled(endpoint: WebhookEndpoint | None) -> bool:
    return endpoint is not None and endpoint.disabled_at is None


# --- deliveries ----------------------------------------------------------------------------


def delivery_row(
    event_id: str, account_id: int, contact_id: str, kind: str, now: datetime, *, pending: bool
) -> dict[str, Any]:
    """A new delivery of an event: `pending` and due now, or `no_endpoint` (kept, not sent)."""
    status = DeliveryStatus.PENDING if pending else DeliveryStatus.NO_ENDPOINT
    return {
        "id": new_id("whd"),
        "event_id": event_id,
        "account_id": account_id,
        "contact_id": contact_id,
        "type": kind,
        "status": status.value,
        "attempts": 0,
        "next_attempt_at": now if pending else None,
        "created_at": now,
        "updated_at": now,
    }


def ensure_delivery(session: Session, event_id: str, now: datetime) -> bool:
    """Make the event's delivery row if it has none: `pending` and due now if the account has
    an enabled endpoint, else `no_endpoint`. False if there is no such event."""
    event = session.get(Event, event_id)
    if event is None:
        return False
    if event.dispatched_at is not None:
        return True
    has_endpoint = _enabled(session.get(WebhookEndpoint, event.account_id))
    row = delivery_row(
        event.id, event.account_id, event.contact_id, event.type, now, pending=has_endpoint
    )
    insert_if_absent(session, _deliveries, row, ["event_id"])
    event.dispatched_at = now
    return True


@dataclass(frozen=True)
class Claim:
    """A delivery this sender holds, with what it needs to send it once."""

    delivery_id: str
    event_id: str
    account_id: int
    attempt: int  # 1-based, within this round
    url: str
    secrets: list[str]
    payload: dict[str, Any]


def claim(
    session: Session,
    event_id: str,
    owner: str,
    now: datetime,
    lease_s: float,
    schedule: Sequence[int],
) -> Claim | None:
    """Become the delivery's only sender for `lease_s`, or None if it is not due, finished,
    held by a live sender, or has nowhere to go (then it is marked `no_endpoint`)."""
    taken = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.event_id == event_id,
            WebhookDelivery.status == DeliveryStatus.PENDING.value,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.lease_owner.is_(None), WebhookDelivery.lease_expires_at < now),
        )
        .values(
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=WebhookDelivery.attempts + 1,
            updated_at=now,
        )
        .returning(WebhookDelivery.id, WebhookDelivery.account_id, WebhookDelivery.attempts)
    ).one_or_none()
    if taken is None:
        return None
    endpoint = session.get(WebhookEndpoint, taken.account_id)
    if not _enabled(endpoint):
        _close(session, taken.id, DeliveryStatus.NO_ENDPOINT, now)
        return None
    assert endpoint is not None
    if taken.attempts > attempts_allowed(schedule):
        # Every attempt was begun and lost with its worker: give up rather than loop.
        _close(session, taken.id, DeliveryStatus.FAILED, now)
        return None
    event = session.get(Event, event_id)
    assert event is not None  # the delivery's foreign key
    return Claim(
        delivery_id=taken.id,
        event_id=event_id,
        account_id=taken.account_id,
        attempt=taken.attempts,
        url=endpoint.url,
        secrets=signing_secrets(endpoint, now),
        payload=event.payload,
    )


def _close(session: Session, delivery_id: str, status: DeliveryStatus, now: datetime) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(
            status=status.value,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    latency_ms: int
    status_code: int | None = None
    response: str | None = None
    error: str | None = None


def record_attempt(
    session: Session,
    claimed: Claim,
    owner: str,
    result: AttemptResult,
    now: datetime,
    schedule: Sequence[int],
    countdown_max_s: float,
    grace_s: float,
) -> tuple[DeliveryStatus, float | None]:
    """Journal the attempt and settle the delivery: succeeded, failed, or pending until the
    schedule's next due time. Returns the status and, when the next attempt is soon enough
    for a broker countdown, its delay (longer waits are left to the relay)."""
    session.add(
        WebhookAttempt(
            delivery_id=claimed.delivery_id,
            attempted_at=now,
            outcome=result.outcome.value,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            response=result.response,
            error=result.error,
        )
    )
    if result.outcome is Outcome.SUCCEEDED:
        status, delay = DeliveryStatus.SUCCEEDED, None
    elif result.status_code == GONE:
        status, delay = DeliveryStatus.FAILED, None
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.account_id == claimed.account_id)
            .values(disabled_at=now, updated_at=now)
        )
    else:
        wait = next_delay(schedule, claimed.attempt)
        status = DeliveryStatus.FAILED if wait is None else DeliveryStatus.PENDING
        delay = None if wait is None else float(wait)
    values: dict[str, Any] = {"status": status.value, "lease_owner": None, "updated_at": now}
    countdown = None
    if status is DeliveryStatus.PENDING:
        assert delay is not None
        due = now + timedelta(seconds=delay)
        values["next_attempt_at"] = due
        if delay <= countdown_max_s:
            # A countdown message will bring it back; the relay steps in only if it has not
            # by the grace after the due time.
            countdown = delay
            values["lease_expires_at"] = due + timedelta(seconds=grace_s)
        else:
            values["lease_expires_at"] = None  # the relay publishes it when due
    else:
        values["next_attempt_at"] = None
        values["lease_expires_at"] = None
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.delivery_id, WebhookDelivery.lease_owner == owner)
        .values(**values)
    )
    return status, countdown


# --- the relay -----------------------------------------------------------------------------


def due_for_relay(session: Session, now: datetime, grace_s: float, limit: int) -> list[str]:
    """Event ids whose delivery task must be published (again), marked as published for
    `grace_s`: events that never got a delivery row within the grace (a lost publish after
    the pipeline's commit), and pending deliveries that are due and not held by a live sender
    (a long wait's due time, a lost countdown message, a sender that died mid-send)."""
    grace = timedelta(seconds=grace_s)
    undispatched = session.execute(
        select(Event.id)
        .where(Event.dispatched_at.is_(None), Event.created_at < now - grace)
        .order_by(Event.created_at)
        .limit(limit)
    ).scalars()
    found = list(undispatched)
    for event_id in found:
        ensure_delivery(session, event_id, now)
    due = and_(
        WebhookDelivery.status == DeliveryStatus.PENDING.value,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
    )
    query = select(WebhookDelivery.id, WebhookDelivery.event_id).where(due)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query.order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()
    if rows:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_([r.id for r in rows]), due)
            .values(lease_owner=None, lease_expires_at=now + grace)
        )
    relayed = [r.event_id for r in rows]
    return relayed + [e for e in found if e not in relayed]


def redrive(
    session: Session,
    now: datetime,
    *,
    failed_only: bool,
    since: datetime | None,
    grace_s: float,
    account_id: int | None = None,
    event_id: str | None = None,
) -> list[str]:
    """Start a new round of attempts for finished deliveries (failed only, or also those that
    succeeded or had no endpoint); the same event id, so the same `webhook-id`."""
    statuses = [DeliveryStatus.FAILED.value]
    if not failed_only:
        statuses += [DeliveryStatus.SUCCEEDED.value, DeliveryStatus.NO_ENDPOINT.value]
    where = [WebhookDelivery.status.in_(statuses)]
    if since is not None:
        where.append(WebhookDelivery.created_at >= since)
    if account_id is not None:
        where.append(WebhookDelivery.account_id == account_id)
    if event_id is not None:
        where.append(WebhookDelivery.event_id == event_id)
    event_ids = list(session.execute(select(WebhookDelivery.event_id).where(*where)).scalars())
    if event_ids:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.event_id.in_(event_ids), *where)
            .values(
                status=DeliveryStatus.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                lease_owner=None,
                # The caller publishes them now; the relay steps in after the grace.
                lease_expires_at=now + timedelta(seconds=grace_s),
                updated_at=now,
            )
        )
    return event_ids


# --- listing -------------------------------------------------------------------------------


def list_deliveries(
    session: Session, account_id: int, contact_id: str | None, limit: int
) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    query = select(WebhookDelivery).where(WebhookDelivery.account_id == account_id)
    if contact_id is not None:
        query = query.where(WebhookDelivery.contact_id == contact_id)
    deliveries = list(
        session.execute(
            query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(
                limit
            )
        ).scalars()
    )
    attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for attempt in session.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.id)
        ).scalars():
            attempts[attempt.delivery_id].append(attempt)
    return [(d, attempts[d.id]) for d in deliveries]
