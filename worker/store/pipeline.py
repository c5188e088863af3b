"""The pipeline's writes: leases, the step journal, terminal transitions and the outbox."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from worker.domain.billing import month_of, previous_month
from worker.domain.contacts import (
    RUNNABLE_STATUSES,
    ContactStatus,
    ContactType,
    StepStatus,
    step_plan,
)
from worker.store import activation, credits, driver
from worker.store.journal import (
    Ahead,
    JournalWrite,
    LeaseLost,
    folded,
    journal_params,
    journal_stmt,
    new_journal,
    owner_holds,
    record_step,
    record_step_stmt,
    write_journal,
)
from worker.store.models import Contact, ContactStep
from worker.store.outbox import event_row, outbox

OPEN = (ContactStatus.PENDING.value, ContactStatus.PROVISIONING.value)
# A runner takes the lease of a contact to provision it, or (`deleting`) to release it.
RUNNABLE = tuple(s.value for s in RUNNABLE_STATUSES)
_DELETING = ContactStatus.DELETING.value

# The hot path's statements are Core statements on the tables, built once with bind
# parameters and executed on the transaction's connection: no per-call statement
# construction, no ORM unit of work. Rows come back as Core rows and are turned into plain
# (session-less) Contact and ContactStep objects for the runner.
_contacts: Table = Contact.__table__  # type: ignore[assignment]
_steps: Table = ContactStep.__table__  # type: ignore[assignment]
_c = _contacts.c
_s = _steps.c


def _one_of(column: Any, values: tuple[str, ...]) -> Any:
    """`column IN ('a', 'b')` with the constants written into the SQL: a plain `in_` is an
    expanding parameter, rendered again on every execution."""
    return column.in_([literal_column(f"'{value}'") for value in values])


def _param(column: Any, name: str) -> BindParameter[Any]:
    """A bind parameter typed as `column` (its name must differ from any SET column's)."""
    return bindparam(name, type_=column.type)


TAKE_LEASE = (
    update(_contacts)
    .where(
        _c.id == bindparam("p_id"),
        _one_of(_c.status, RUNNABLE),
        or_(_c.lease_owner.is_(None), _c.lease_expires_at < _param(_c.lease_expires_at, "p_now")),
    )
    .values(
        lease_owner=_param(_c.lease_owner, "p_owner"),
        lease_expires_at=_param(_c.lease_expires_at, "p_expires"),
        deliveries=_c.deliveries + 1,
        takeovers=_c.takeovers + case((_c.lease_owner.is_not(None), 1), else_=0),
        status=case((_c.status == _DELETING, _DELETING), else_=ContactStatus.PROVISIONING.value),
        started_at=func.coalesce(_c.started_at, _param(_c.started_at, "p_now")),
        updated_at=_param(_c.updated_at, "p_now"),
    )
    .returning(*_contacts.c)
)
_PEEK = select(*_contacts.c).where(_c.id == bindparam("p_id"))
_SELECT_STEPS = select(*_steps.c).where(_s.contact_id == bindparam("p_contact_id"))
_RENEW_LEASE = (
    update(_contacts)
    .where(_c.id == bindparam("p_id"), _c.lease_owner == bindparam("p_owner"))
    .values(lease_expires_at=_param(_c.lease_expires_at, "p_expires"))
)
# A provisioning step starts only while the contact is still being provisioned: a DELETE
# (`deleting`) stops the runner at this boundary, and it turns to releasing the contact.
_RENEW_LEASE_OPEN = _RENEW_LEASE.where(_one_of(_c.status, OPEN))
# One more attempt, under the lease (`owner_holds`): the count comes back from the row, so
# whether this is the step's first attempt is decided from the database, not from memory.
_START_STEP = (
    update(_steps)
    .where(_s.id == bindparam("p_id"), owner_holds("p"))
    .values(
        status=StepStatus.RUNNING.value,
        attempts=_s.attempts + 1,
        updated_at=_param(_s.updated_at, "p_now"),
    )
    .returning(_s.attempts)
)
# The check just before a creating request (or a compensation): the lease renewed, and the
# step's attempts as the journal has them now; no row if the lease is not ours any more.
_CONFIRM_LEASE = (
    update(_contacts)
    .where(_c.id == bindparam("p_id"), _c.lease_owner == bindparam("p_owner"))
    .values(lease_expires_at=_param(_c.lease_expires_at, "p_expires"))
    .returning(
        select(_s.attempts).where(_s.id == bindparam("p_step")).scalar_subquery().label("attempts")
    )
)
_RELEASE_LEASE = (
    update(_contacts)
    .where(_c.id == bindparam("p_id"), _c.lease_owner == bindparam("p_owner"))
    .values(lease_owner=None, lease_expires_at=_param(_c.lease_expires_at, "p_due"))
)
_MARK_FAILING = (
    update(_contacts)
    .where(_c.id == bindparam("p_id"), _c.lease_owner == bindparam("p_owner"))
    .values(
        error_code=_param(_c.error_code, "p_code"),
        error_message=_param(_c.error_message, "p_message"),
        updated_at=_param(_c.updated_at, "p_now"),
    )
)
_HOLD_BACK = (
    update(_contacts)
    .where(_c.id == bindparam("p_id"), _c.lease_owner == bindparam("p_owner"))
    .values(started_at=_param(_c.started_at, "p_started"))
)


@functools.cache
def finish_stmt(columns: tuple[str, ...]) -> Any:
    """The terminal UPDATE, also setting the extra `columns` (each bound as `p_<column>`)."""
    return (
        update(_contacts)
        .where(
            _c.id == bindparam("p_id"),
            _c.lease_owner == bindparam("p_owner"),
            _c.status == ContactStatus.PROVISIONING.value,
        )
        .values(
            status=_param(_c.status, "p_status"),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=_param(_c.updated_at, "p_now"),
            **{name: _param(_c[name], f"p_{name}") for name in columns},
        )
    )


def _connection(session: Session) -> Connection:
    return session.connection()


def contact_of(values: Mapping[str, Any]) -> Contact:
    """A plain (session-less) Contact of a row's columns."""
    contact = Contact()
    for name, value in values.items():
        setattr(contact, name, value)
    return contact


def step_of(row: Any) -> ContactStep:
    step = ContactStep()
    for name, value in row._asdict().items():
        setattr(step, name, value)
    return step


class SettlementConflict(RuntimeError):
    """A terminal transition found its reservation already captured or released."""


@dataclass(frozen=True)
class Lease:
    """A contact this runner holds, with its journal, as of taking the lease.

    `started`: the step this transaction already journaled as started (attempt 1), when it
    made the journal; None when the journal existed and nothing is started yet."""

    contact: Contact
    steps: dict[str, ContactStep]
    started: ContactStep | None = None


def peek(connection: Connection, contact_id: str) -> Contact | None:
    """The contact as it is now, read without a lease or a transaction of its own."""
    found = driver.rows(connection, _PEEK, {"p_id": contact_id})
    return contact_of(found[0]._asdict()) if found else None


def take_lease(
    session: Session,
    contact_id: str,
    owner: str,
    now: datetime,
    lease_s: float,
    *,
    ahead: Ahead | None = None,
    fold: bool = False,
) -> Lease | None:
    """Become the contact's only runner, or None if it is finished, missing or held.

    `fold`: a new journal's read-only first step is journaled done, to be made right after
    the lease (`journal.folded`).

    One conditional UPDATE: of two deliveries of one message, exactly one gets the row. A
    lease left by a runner that died (expired, owner still set) counts as a takeover.

    The journal is made by the first delivery, in this transaction: `deliveries` is 1 only
    for that one (it only ever grows, and the journal commits with it), so the first
    delivery inserts the journal without looking for it first (were a journal there anyway,
    the unique (contact_id, name) constraint would fail this transaction, not duplicate it).
    A new journal is inserted with its first step already started (attempt 1: the lease is
    ours from this transaction on) or, with `ahead`, with that read-only step done and the
    next one started. A delivery that finds the journal made ignores `ahead`: another runner
    got there first, and its own search is the one journaled.
    """
    connection = _connection(session)
    taken = driver.rows(
        connection,
        TAKE_LEASE,
        {
            "p_id": contact_id,
            "p_now": now,
            "p_owner": owner,
            "p_expires": now + timedelta(seconds=lease_s),
        },
    )
    if not taken:
        return None
    contact = contact_of(taken[0]._asdict())
    steps: dict[str, ContactStep] = {}
    if contact.deliveries != 1 or contact.status == _DELETING:
        # A journal made by an earlier delivery, or a first delivery of a contact cancelled
        # before it ever ran (its journal is empty).
        steps = select_steps(connection, contact_id)
    if steps or contact.status == _DELETING:
        return Lease(contact, steps)
    plan = step_plan(ContactType(contact.contact_type), contact.request)
    if not plan:  # nothing to run (an address the customer brought)
        return Lease(contact, steps)
    if ahead is None and fold:
        ahead = folded(ContactType(contact.contact_type), plan)
    values, started = new_journal(contact_id, plan, ahead, now)
    params = journal_params(values)
    ids = {r.name: r.id for r in driver.rows(connection, journal_stmt(len(values)), params)}
    return journal_lease(contact, values, ids, started)


def journal_lease(
    contact: Contact, values: list[dict[str, Any]], ids: dict[str, int], started: str | None
) -> Lease:
    """The lease of a contact whose new journal (`values`) was inserted with these ids."""
    steps: dict[str, ContactStep] = {}
    for value in values:
        step = ContactStep(id=ids[value["name"]], **value)
        step.last_error = None
        steps[step.name] = step
    return Lease(contact, steps, steps[started] if started is not None else None)


def select_steps(connection: Connection, contact_id: str) -> dict[str, ContactStep]:
    return {
        r.name: step_of(r)
        for r in driver.rows(connection, _SELECT_STEPS, {"p_contact_id": contact_id})
    }


def start_step(
    session: Session,
    step: ContactStep,
    owner: str,
    now: datetime,
    lease_s: float,
    *,
    renew: bool = True,
    releasing: bool = False,
) -> bool:
    """Renew the lease and journal one more attempt of `step`; False if the lease was lost
    or (a provisioning step, not `releasing`) the contact is no longer being provisioned.

    `renew=False` only in the transaction that took the lease (`take_lease` with the same
    `now` and `lease_s`): the lease is ours and already runs until the same expiry."""
    connection = _connection(session)
    if renew:
        renewed = driver.count(
            connection,
            _RENEW_LEASE if releasing else _RENEW_LEASE_OPEN,
            {
                "p_id": step.contact_id,
                "p_owner": owner,
                "p_expires": now + timedelta(seconds=lease_s),
            },
        )
        if renewed != 1:
            return False
    started = driver.rows(
        connection, _START_STEP, {"p_id": step.id, "p_owner": owner, "p_now": now}
    )
    if not started:
        # Renewed above, so only a transaction that took the lease without `renew` gets here.
        raise LeaseLost(f"step {step.id}: the lease is not {owner}'s")
    step.attempts = started[0].attempts
    step.status = StepStatus.RUNNING.value
    return True


def confirm_lease(
    connection: Connection,
    contact_id: str,
    owner: str,
    now: datetime,
    lease_s: float,
    step_id: int | None = None,
) -> int | None:
    """Renew `owner`'s lease, one statement: None if it is not `owner`'s any more; else the
    attempts of the journal's step `step_id` as they are now (0 without a step)."""
    found = driver.rows(
        connection,
        _CONFIRM_LEASE,
        {
            "p_id": contact_id,
            "p_owner": owner,
            "p_expires": now + timedelta(seconds=lease_s),
            "p_step": step_id if step_id is not None else -1,
        },
    )
    if not found:
        return None
    return int(found[0].attempts or 0)


def unstart_step(
    session: Session, step: ContactStep, owner: str, now: datetime, *, take_back_attempt: bool
) -> None:
    """Put a started step back to pending (it could not run now); with `take_back_attempt`,
    as if this attempt had never started (it sent no request). `LeaseLost` if the lease is
    not `owner`'s."""
    attempts = step.attempts - 1 if take_back_attempt else step.attempts
    done = driver.count(
        _connection(session),
        record_step_stmt(("status", "attempts", "updated_at")),
        {
            "p_id": step.id,
            "p_owner": owner,
            "p_status": StepStatus.PENDING.value,
            "p_attempts": attempts,
            "p_updated_at": now,
        },
    )
    if done != 1:
        raise LeaseLost(f"step {step.id}: the lease is not {owner}'s")
    step.attempts = attempts
    step.status = StepStatus.PENDING.value


def hold_back(
    session: Session, contact: Contact, owner: str, seconds: float, now: datetime
) -> None:
    """Move the contact's `started_at` later by `seconds`: time held back by the provider
    rate budgets is not time spent trying, so it does not count against the retry bound."""
    start = (contact.started_at or now) + timedelta(seconds=seconds)
    done = driver.count(
        _connection(session), _HOLD_BACK, {"p_id": contact.id, "p_owner": owner, "p_started": start}
    )
    if done != 1:
        raise LeaseLost(f"contact {contact.id}: the lease is not {owner}'s")
    contact.started_at = start


def release_lease(session: Session, contact_id: str, owner: str, due_at: datetime) -> bool:
    """Let go of the contact until `due_at`, when a scheduled message (or the reconciler)
    brings it back; False if it was not `owner`'s to let go of."""
    return (
        driver.count(
            _connection(session),
            _RELEASE_LEASE,
            {"p_id": contact_id, "p_owner": owner, "p_due": due_at},
        )
        == 1
    )


def mark_failing(
    session: Session, contact: Contact, owner: str, code: str, message: str, now: datetime
) -> bool:
    """Record the error before compensating, so a crash mid-compensation resumes it; False
    (nothing recorded) if the lease is not `owner`'s: the runner must stop, not compensate."""
    done = driver.count(
        _connection(session),
        _MARK_FAILING,
        {"p_id": contact.id, "p_owner": owner, "p_code": code, "p_message": message, "p_now": now},
    )
    if done != 1:
        return False
    contact.error_code, contact.error_message = code, message
    return True


def _finish(
    session: Session,
    contact: Contact,
    owner: str,
    status: ContactStatus,
    now: datetime,
    values: dict[str, Any],
) -> bool:
    params = _finish_params(contact, owner, status, now, values)
    done = _connection(session).execute(finish_stmt(tuple(values)), params)
    if done.rowcount != 1:
        return False
    _set_finished(contact, status, now, values)
    return True


def _finish_params(
    contact: Contact, owner: str, status: ContactStatus, now: datetime, values: dict[str, Any]
) -> dict[str, Any]:
    params = {f"p_{name}": value for name, value in values.items()}
    params.update({"p_id": contact.id, "p_owner": owner, "p_status": status.value, "p_now": now})
    return params


def _set_finished(
    contact: Contact, status: ContactStatus, now: datetime, values: dict[str, Any]
) -> None:
    contact.status = status.value
    contact.updated_at = now
    contact.lease_owner = None
    for name, value in values.items():
        setattr(contact, name, value)


def activate(
    session: Session,
    contact: Contact,
    steps: Sequence[ContactStep],
    owner: str,
    address: str,
    now: datetime,
    events: list[str] | None = None,
    grace: timedelta = timedelta(days=14),
    *,
    last: JournalWrite | None = None,
    commit: bool = False,
) -> bool:
    """`active`: set the address, capture the cost exactly once, charge the month's fee, write
    the outbox event (its id appended to `events`). If the credits left cannot pay the fee,
    the contact goes on to `grace_period` (ending after `grace`), with its event too.

    `last`, the journal write of the step that finished the plan (`mark_done`), is written
    here: on PostgreSQL in the one statement that also moves the contact, writes its event
    and its ledger rows (`worker.store.activation`); it is written, as `record_step` would
    have, while `owner` holds the lease, whether or not the contact moves (a cancellation),
    and not at all once another runner holds it.

    `commit`: the balance's UPDATE is the transaction's last statement, and on PostgreSQL
    its COMMIT goes with it, in one round trip (`credits.settle_and_commit`); nothing may
    follow. If the credits cannot pay the month's fee it raises `credits.FeeNotCovered` with
    nothing committed: roll back, and run it again without `commit`."""
    # `charged` in the same UPDATE: the capture below is certain to be this one. The month of
    # activation is paid here too, if the credits cover its fee (`billed_through` is put
    # back a month below if they do not).
    month = month_of(now)
    values = {"address": address, "charged": True, "billed_through": month}
    fee_month = month if contact.monthly_cost_cents else None
    as_was = {name: getattr(contact, name) for name in ("status", "updated_at", "lease_owner")}
    as_was.update({name: getattr(contact, name) for name in values})
    published = len(events) if events is not None else 0
    try:
        if last is not None and _connection(session).dialect.name == "postgresql":
            settled = _activate_in_one(
                session, contact, steps, owner, now, values, fee_month, last, events, commit
            )
        else:
            settled = _activate_by_steps(
                session, contact, steps, owner, now, values, fee_month, last, events, commit
            )
    except credits.FeeNotCovered:  # nothing was committed: the contact and `events` as they were
        _put_back(contact, as_was)
        if events is not None:
            del events[published:]
        raise
    if settled is None:
        _put_back(contact, as_was)
        return False
    if settled is credits.Activation.ALREADY_SETTLED:
        # The contact was provisioning until the UPDATE above, so its reservation was open:
        # a settlement of it already in the ledger is a broken invariant. Roll back.
        raise SettlementConflict(
            f"contact {contact.id}: reservation {contact.reservation_seq} is already settled"
        )
    if settled is credits.Activation.FEE_UNPAID:
        # Active, and already owing its first month: the grace period starts now.
        enter_grace(session, contact, previous_month(month), now + grace, now)
        outbox(session, contact, steps, now, events)
    return True


def _activate_in_one(
    session: Session,
    contact: Contact,
    steps: Sequence[ContactStep],
    owner: str,
    now: datetime,
    values: dict[str, Any],
    fee_month: str | None,
    last: JournalWrite,
    events: list[str] | None,
    commit: bool,
) -> credits.Activation | None:
    """`activate` on PostgreSQL; None if the contact did not move (lease lost, cancelled)."""
    _set_finished(contact, ContactStatus.ACTIVE, now, values)  # what the event shows
    event = event_row(contact, steps, now)
    rows, charge = credits.activation_rows(contact, fee_month)
    finished, kept, written = activation.activate_in_one(
        session,
        step_update=record_step_stmt(last.columns, "s", fenced=False),
        step_params=last.params("s"),
        finish=finish_stmt(tuple(values)),
        finish_params=_finish_params(contact, owner, ContactStatus.ACTIVE, now, values),
        event=event,
        ledger=rows,
        now=now,
    )
    if not finished:
        return None
    if not kept and events is not None:
        events.append(event["id"])
    settle = credits.settle_and_commit if commit else credits.settle_activation
    return settle(session, contact, charge, written)


def _activate_by_steps(
    session: Session,
    contact: Contact,
    steps: Sequence[ContactStep],
    owner: str,
    now: datetime,
    values: dict[str, Any],
    fee_month: str | None,
    last: JournalWrite | None,
    events: list[str] | None,
    commit: bool,
) -> credits.Activation | None:
    """`activate` statement by statement (SQLite; or no step left to journal)."""
    if last is not None:
        try:
            write_journal(session, last, owner)
        except LeaseLost:  # as on PostgreSQL: nothing written, the contact not moved
            return None
    if not _finish(session, contact, owner, ContactStatus.ACTIVE, now, values):
        return None
    outbox(session, contact, steps, now, events)
    # Last (but for a fee the credits cannot cover): the account row is every activation's
    # hot spot, locked from its UPDATE until the commit.
    return credits.capture_activation(session, contact, fee_month, commit=commit)


def _put_back(contact: Contact, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(contact, name, value)


def enter_grace(
    session: Session, contact: Contact, billed_through: str, ends_at: datetime, now: datetime
) -> None:
    """An active contact whose fee the credits could not cover: `grace_period` until
    `ends_at`, paid through `billed_through`."""
    _connection(session).execute(
        update(_contacts)
        .where(_c.id == contact.id, _c.status == ContactStatus.ACTIVE.value)
        .values(
            status=ContactStatus.GRACE_PERIOD.value,
            billed_through=billed_through,
            grace_ends_at=ends_at,
            updated_at=now,
        )
    )
    contact.status = ContactStatus.GRACE_PERIOD.value
    contact.billed_through, contact.grace_ends_at = billed_through, ends_at


def fail(
    session: Session,
    contact: Contact,
    steps: Sequence[ContactStep],
    owner: str,
    now: datetime,
    events: list[str] | None = None,
) -> bool:
    """`failed` (after compensation): release the reservation, close the journal, outbox (the
    event's id appended to `events`)."""
    if not _finish(session, contact, owner, ContactStatus.FAILED, now, {}):
        return False
    close_journal(session, steps, now, undone=True)
    outbox(session, contact, steps, now, events)
    credits.release(session, contact)  # last: the account row is the hot spot
    return True


def close_journal(
    session: Session, steps: Sequence[ContactStep], now: datetime, *, undone: bool
) -> None:
    """Close the provisioning steps of a contact that ends: a step done is `compensated` when
    `undone` (its resource removed), one never finished is `skipped` or `failed`."""
    for step in steps:
        if step.status == StepStatus.DONE.value and undone:
            new = StepStatus.COMPENSATED
        elif step.status in (StepStatus.PENDING.value, StepStatus.RUNNING.value):
            new = StepStatus.SKIPPED if step.attempts == 0 else StepStatus.FAILED
        else:
            continue
        # Unfenced: after the terminal UPDATE of this transaction, which checked the owner
        # and cleared it, and holds the contact's row until the commit.
        record_step(session, step, new, now, owner=None, error=step.last_error)


def record_event(
    session: Session, contact: Contact, now: datetime, events: list[str] | None = None
) -> None:
    """Write the outbox event of a contact that reached its status outside the pipeline (an
    address brought by the customer: `contact.active` when it is recorded)."""
    outbox(session, contact, [], now, events)
