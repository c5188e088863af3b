"""The journal: each contact's steps, one row per step, updated as the runner moves on."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Table, bindparam, insert, literal_column, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from worker.domain.contacts import ContactType, StepStatus, read_only_first_step
from worker.store import driver
from worker.store.models import Contact, ContactStep

_steps: Table = ContactStep.__table__  # type: ignore[assignment]
_s = _steps.c
_contacts: Table = Contact.__table__  # type: ignore[assignment]


class LeaseLost(Exception):
    """A write under the contact's lease matched no row: another runner holds it now (a
    runner frozen past the dead-after time was taken over). Nothing of the transaction is
    to be committed; the runner stops."""


def owner_holds(prefix: str = "p") -> Any:
    """The fence of a write under a lease: the journal row's contact is leased to
    `<prefix>_owner`. On PostgreSQL the contact's row is locked (FOR NO KEY UPDATE, as the
    lease's own UPDATE locks it): a takeover that commits while this statement runs is seen
    (the row is read again once its lock is free, and no longer matches), and none can
    commit until this transaction ends. SQLite has one writer at a time."""
    return (
        select(literal_column("1"))
        .select_from(_contacts)
        .where(
            _contacts.c.id == _s.contact_id,
            _contacts.c.lease_owner
            == bindparam(f"{prefix}_owner", type_=_contacts.c.lease_owner.type),
        )
        .with_for_update(key_share=True)
        .exists()
    )


@functools.cache
def record_step_stmt(columns: tuple[str, ...], prefix: str = "p", fenced: bool = True) -> Any:
    """UPDATE of one journal row setting `columns` (each bound as `<prefix>_<column>`, the
    row's id as `<prefix>_id`), only while the contact is leased to `<prefix>_owner`
    (`fenced`; unfenced only after the transaction's own terminal UPDATE, which checked the
    owner and holds the contact's row)."""
    statement = update(_steps).where(_s.id == bindparam(f"{prefix}_id"))
    if fenced:
        statement = statement.where(owner_holds(prefix))
    return statement.values(
        {name: bindparam(f"{prefix}_{name}", type_=_s[name].type) for name in columns}
    )


def record_step(
    session: Session,
    step: ContactStep,
    status: StepStatus,
    now: datetime,
    *,
    owner: str | None,
    **changes: Any,
) -> None:
    """Write the step's new state (`set_state`'s `changes`) in the caller's transaction,
    under `owner`'s lease (`LeaseLost` if it is not held); `owner=None` only after the
    transaction's terminal UPDATE (see `record_step_stmt`)."""
    write_journal(session, set_state(step, status, now, **changes), owner)


@dataclass(frozen=True)
class JournalWrite:
    """A journal row's new state, set on the step already, not yet written."""

    step_id: int
    values: dict[str, Any]  # column: new value

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.values)

    def params(self, prefix: str = "p", owner: str | None = None) -> dict[str, Any]:
        """The parameters of `record_step_stmt(self.columns, prefix)` (fenced on `owner`)."""
        params = {f"{prefix}_{name}": value for name, value in self.values.items()}
        params[f"{prefix}_id"] = self.step_id
        if owner is not None:
            params[f"{prefix}_owner"] = owner
        return params


def mark_done(step: ContactStep, now: datetime, **changes: Any) -> JournalWrite:
    """Set `step` done, in memory; write it with `write_journal`, or pass it to `activate`."""
    return set_state(step, StepStatus.DONE, now, **changes)


def write_journal(session: Session, write: JournalWrite, owner: str | None) -> None:
    """Write `write` under `owner`'s lease: `LeaseLost` if the contact is not leased to it
    (the caller's transaction is then to be rolled back). `owner=None`: see `record_step`."""
    statement = record_step_stmt(write.columns, fenced=owner is not None)
    if driver.count(session.connection(), statement, write.params(owner=owner)) != 1:
        raise LeaseLost(f"journal row {write.step_id}: the lease is not {owner}'s")


def set_state(
    step: ContactStep,
    status: StepStatus,
    now: datetime,
    *,
    provider_id: str | None = None,
    detail: dict[str, Any] | None = None,
    error: str | None = None,
    attempts: int | None = None,
) -> JournalWrite:
    """Set the step's new state on `step` itself; the write that records it."""
    values: dict[str, Any] = {"status": status.value, "updated_at": now, "last_error": error}
    if provider_id is not None:
        values["provider_id"] = step.provider_id = provider_id
    if detail is not None:
        values["detail"] = step.detail = detail
    if attempts is not None:  # an attempt taken back (see worker.domain.compensation)
        values["attempts"] = step.attempts = attempts
    step.status = status.value
    step.last_error = error
    return JournalWrite(step.id, values)


@dataclass(frozen=True)
class Ahead:
    """A read-only first step journaled done with the lease that makes the journal (see
    `take_lease`): one that ran before the lease, or (`folded`) one the runner makes right
    after it, in memory, as the first part of the next step's first attempt."""

    name: str
    provider_id: str | None
    detail: dict[str, Any]


def folded(contact_type: ContactType, plan: Sequence[str]) -> Ahead | None:
    """The plan's read-only first step (a number search), journaled done as the lease is
    taken and made just after it: no provider request of a first run comes before its lease,
    and its search costs no transaction of its own. Its result is the runner's alone (not
    journaled): a later attempt of the purchase, by this runner or another, searches again."""
    name = read_only_first_step(contact_type)
    if name is None or not plan or plan[0] != name:
        return None
    return Ahead(name, None, {"folded": True})


# The new journal: one INSERT of all its rows (one per step; `journal_stmt(n)` binds each
# row's values as `p<i>_<column>`), `detail` bound as SQL NULL when None (the column's own
# JSON type would store JSON null).
JOURNAL_COLUMNS = (
    "contact_id",
    "position",
    "name",
    "status",
    "attempts",
    "provider_id",
    "detail",
    "updated_at",
)


def journal_bind(column: str, i: int) -> BindParameter[Any]:
    if column == "detail":
        return bindparam(f"p{i}_detail", type_=JSON(none_as_null=True))
    return bindparam(f"p{i}_{column}", type_=_s[column].type)


@functools.cache
def journal_stmt(rows: int) -> Any:
    """The INSERT of a new journal of `rows` steps, returning each row's id and name."""
    return (
        insert(_steps)
        .values([{c: journal_bind(c, i) for c in JOURNAL_COLUMNS} for i in range(rows)])
        .returning(_s.id, _s.name)
    )


def new_journal(
    contact_id: str, plan: Sequence[str], ahead: Ahead | None, now: datetime
) -> tuple[list[dict[str, Any]], str | None]:
    """A new journal's rows for `plan`: the first step started (attempt 1) or, with `ahead`,
    that read-only step done and the next one started; and the started step's name."""
    values: list[dict[str, Any]] = []
    started: str | None = None
    for position, name in enumerate(plan):
        value: dict[str, Any] = {
            "contact_id": contact_id,
            "position": position,
            "name": name,
            "status": StepStatus.PENDING.value,
            "attempts": 0,
            "provider_id": None,
            "detail": None,
            "updated_at": now,
        }
        if ahead is not None and name == ahead.name:
            value.update(
                status=StepStatus.DONE.value,
                attempts=1,
                provider_id=ahead.provider_id,
                detail=ahead.detail,
            )
        elif started is None:
            value.update(status=StepStatus.RUNNING.value, attempts=1)
            started = name
        values.append(value)
    return values, started


def journal_params(values: list[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of `journal_stmt(len(values))`."""
    return {f"p{i}_{name}": value for i, row in enumerate(values) for name, value in row.items()}
