"""The pipeline's writes: leases, the step journal, terminal transitions and the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from worker.domain.contacts import ContactStatus, ContactType, StepStatus, step_plan
from worker.domain.ids import new_id
from worker.store import credits
from worker.store.models import Contact, ContactStep, Event
from worker.views import contact_view

OPEN = (ContactStatus.PENDING.value, ContactStatus.PROVISIONING.value)


@dataclass(frozen=True)
class Lease:
    """A contact this runner holds, with its journal, as of taking the lease."""

    contact: Contact
    steps: dict[str, ContactStep]


def take_lease(
    session: Session, contact_id: str, owner: str, now: datetime, lease_s: float
) -> Lease | None:
    """Become the contact's only runner, or None if it is finished, missing or held.

    One conditional UPDATE: of two deliveries of one message, exactly one gets the row. A
    lease left by a runner that died (expired, owner still set) counts as a takeover.
    """
    contact = session.execute(
        update(Contact)
        .where(
            Contact.id == contact_id,
            Contact.status.in_(OPEN),
            or_(Contact.lease_owner.is_(None), Contact.lease_expires_at < now),
        )
        .values(
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            deliveries=Contact.deliveries + 1,
            takeovers=Contact.takeovers + case((Contact.lease_owner.is_not(None), 1), else_=0),
            status=ContactStatus.PROVISIONING.value,
            started_at=func.coalesce(Contact.started_at, now),
            updated_at=now,
        )
        .returning(Contact)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if contact is None:
        return None
    steps = {
        s.name: s
        for s in session.execute(
            select(ContactStep).where(ContactStep.contact_id == contact_id)
        ).scalars()
    }
    if not steps:
        for position, name in enumerate(step_plan(ContactType(contact.contact_type))):
            step = ContactStep(
                contact_id=contact_id,
                position=position,
                name=name,
                status=StepStatus.PENDING.value,
                attempts=0,
                updated_at=now,
            )
            session.add(step)
            steps[name] = step
        session.flush()
    return Lease(contact, steps)


def start_step(
    session: Session, step: ContactStep, owner: str, now: datetime, lease_s: float
) -> bool:
    """Renew the lease and journal one more attempt of `step`; False if the lease was lost."""
    renewed = session.execute(
        update(Contact)
        .where(Contact.id == step.contact_id, Contact.lease_owner == owner)
        .values(lease_expires_at=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    step.attempts += 1
    session.execute(
        update(ContactStep)
        .where(ContactStep.id == step.id)
        .values(status=StepStatus.RUNNING.value, attempts=step.attempts, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    step.status = StepStatus.RUNNING.value
    return True


def record_step(
    session: Session,
    step: ContactStep,
    status: StepStatus,
    now: datetime,
    *,
    provider_id: str | None = None,
    detail: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status.value, "updated_at": now, "last_error": error}
    if provider_id is not None:
        values["provider_id"] = provider_id
        step.provider_id = provider_id
    if detail is not None:
        values["detail"] = detail
        step.detail = detail
    session.execute(
        update(ContactStep)
        .where(ContactStep.id == step.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    step.status = status.value
    step.last_error = error


def release_lease(session: Session, contact_id: str, owner: str, due_at: datetime) -> None:
    """Let go of the contact until `due_at`, when a scheduled message (or the reconciler)
    brings it back."""
    session.execute(
        update(Contact)
        .where(Contact.id == contact_id, Contact.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=due_at)
        .execution_options(synchronize_session=False)
    )


def mark_failing(
    session: Session, contact: Contact, owner: str, code: str, message: str, now: datetime
) -> None:
    """Record the error before compensating, so a crash mid-compensation resumes it."""
    session.execute(
        update(Contact)
        .where(Contact.id == contact.id, Contact.lease_owner == owner)
        .values(error_code=code, error_message=message, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    contact.error_code, contact.error_message = code, message


def _finish(
    session: Session,
    contact: Contact,
    owner: str,
    status: ContactStatus,
    now: datetime,
    values: dict[str, Any],
) -> bool:
    done = session.execute(
        update(Contact)
        .where(
            Contact.id == contact.id,
            Contact.lease_owner == owner,
            Contact.status == ContactStatus.PROVISIONING.value,
        )
        .values(
            status=status.value,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
            **values,
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    contact.status = status.value
    contact.updated_at = now
    contact.lease_owner = None
    for name, value in values.items():
        setattr(contact, name, value)
    return True


def _outbox(
    session: Session, contact: Contact, steps: Sequence[ContactStep], now: datetime
) -> None:
    view = contact_view(contact, steps)
    session.add(
        Event(
            id=new_id("evt"),
            account_id=contact.account_id,
            contact_id=contact.id,
            type=f"contact.{contact.status}",
            payload={
                "type": f"contact.{contact.status}",
                "timestamp": view["updated_at"],
                "data": view,
            },
            created_at=now,
        )
    )


def activate(
    session: Session,
    contact: Contact,
    steps: Sequence[ContactStep],
    owner: str,
    address: str,
    now: datetime,
) -> bool:
    """`active`: set the address, capture the cost exactly once, write the outbox event."""
    if not _finish(session, contact, owner, ContactStatus.ACTIVE, now, {"address": address}):
        return False
    claimed = credits.claim_capture(session, contact)
    _outbox(session, contact, steps, now)
    if claimed:
        # Last: the account row is every job's hot spot; its lock is held until the commit.
        credits.apply_capture(session, contact)
    return True


def fail(
    session: Session, contact: Contact, steps: Sequence[ContactStep], owner: str, now: datetime
) -> bool:
    """`failed` (after compensation): release the reservation, close the journal, outbox."""
    if not _finish(session, contact, owner, ContactStatus.FAILED, now, {}):
        return False
    for step in steps:
        if step.status == StepStatus.DONE.value:
            new = StepStatus.COMPENSATED
        elif step.status in (StepStatus.PENDING.value, StepStatus.RUNNING.value):
            new = StepStatus.SKIPPED if step.attempts == 0 else StepStatus.FAILED
        else:
            continue
        record_step(session, step, new, now, error=step.last_error)
    _outbox(session, contact, steps, now)
    credits.release(session, contact)  # last: the account row is the hot spot
    return True


def due_for_reconcile(
    session: Session, now: datetime, grace_s: float, limit: int
) -> list[tuple[str, str | None]]:
    """Open contacts nobody will come back to by themselves; claims them for `grace_s`.

    Due: a lease or scheduled retry whose time has passed, or a pending contact never leased
    and older than the grace (its publish may have been lost).
    """
    grace = timedelta(seconds=grace_s)
    due = and_(
        Contact.status.in_(OPEN),
        or_(
            Contact.lease_expires_at < now,
            and_(Contact.lease_expires_at.is_(None), Contact.created_at < now - grace),
        ),
    )
    query = select(Contact.id, Contact.batch_id).where(due).order_by(Contact.created_at)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = [(r.id, r.batch_id) for r in session.execute(query.limit(limit))]
    if rows:
        session.execute(
            update(Contact)
            .where(Contact.id.in_([r[0] for r in rows]), Contact.lease_owner.is_(None))
            .values(lease_expires_at=now + grace)
        )
    return rows


def reopen(session: Session, contact_id: str, now: datetime, grace_s: float) -> Contact | None:
    """Operator retry of a failed contact: back to pending with a fresh reservation.

    Returns None if the contact is not failed; the caller reserves the cost again.
    """
    contact = session.execute(
        select(Contact).where(Contact.id == contact_id).with_for_update()
    ).scalar_one_or_none()
    if contact is None or contact.status != ContactStatus.FAILED.value:
        return None
    contact.reservation_seq += 1
    contact.status = ContactStatus.PENDING.value
    contact.error_code = contact.error_message = None
    contact.lease_owner = None
    contact.lease_expires_at = now + timedelta(seconds=grace_s)
    contact.takeovers = 0
    contact.started_at = None
    contact.updated_at = now
    session.execute(
        update(ContactStep)
        .where(ContactStep.contact_id == contact_id)
        .values(
            status=StepStatus.PENDING.value,
            attempts=0,
            provider_id=None,
            detail=None,
            last_error=None,
            updated_at=now,
        )
    )
    session.flush()
    return contact
