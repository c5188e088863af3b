"""The journal: each contact's steps, one row per step, updated as the runner moves on."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, update
from sqlalchemy.orm import Session

from worker.domain.contacts import StepStatus
from worker.store.models import ContactStep

_steps: Table = ContactStep.__table__  # type: ignore[assignment]
_s = _steps.c


@functools.cache
def record_step_stmt(columns: tuple[str, ...], prefix: str = "p") -> Any:
    """UPDATE of one journal row setting `columns` (each bound as `<prefix>_<column>`, the
    row's id as `<prefix>_id`)."""
    return (
        update(_steps)
        .where(_s.id == bindparam(f"{prefix}_id"))
        .values({name: bindparam(f"{prefix}_{name}", type_=_s[name].type) for name in columns})
    )


def record_step(
    session: Session,
    step: ContactStep,
    status: StepStatus,
    now: datetime,
    *,
    provider_id: str | None = None,
    detail: dict[str, Any] | None = None,
    error: str | None = None,
    attempts: int | None = None,
) -> None:
    columns, params = journal(
        step, status, now, provider_id=provider_id, detail=detail, error=error, attempts=attempts
    )
    session.connection().execute(record_step_stmt(columns), params)


@dataclass(frozen=True)
class JournalWrite:
    """A journal row's new state, set on the step already, not yet written."""

    columns: tuple[str, ...]
    params: dict[str, Any]


def mark_done(
    step: ContactStep,
    now: datetime,
    *,
    provider_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> JournalWrite:
    """Set `step` done, in memory; write it with `write_journal`, or pass it to `activate`."""
    return JournalWrite(
        *journal(step, StepStatus.DONE, now, provider_id=provider_id, detail=detail)
    )


def write_journal(session: Session, write: JournalWrite) -> None:
    session.connection().execute(record_step_stmt(write.columns), write.params)


def journal(
    step: ContactStep,
    status: StepStatus,
    now: datetime,
    *,
    provider_id: str | None = None,
    detail: dict[str, Any] | None = None,
    error: str | None = None,
    attempts: int | None = None,
    prefix: str = "p",
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Set the step's new state on `step` itself; the columns and parameters of the UPDATE
    that writes it (`record_step_stmt(columns, prefix)`)."""
    params: dict[str, Any] = {
        f"{prefix}_id": step.id,
        f"{prefix}_status": status.value,
        f"{prefix}_updated_at": now,
        f"{prefix}_last_error": error,
    }
    columns: tuple[str, ...] = ("status", "updated_at", "last_error")
    if provider_id is not None:
        columns += ("provider_id",)
        params[f"{prefix}_provider_id"] = provider_id
        step.provider_id = provider_id
    if detail is not None:
        columns += ("detail",)
        params[f"{prefix}_detail"] = detail
        step.detail = detail
    if attempts is not None:  # an attempt taken back (see worker.domain.compensation)
        columns += ("attempts",)
        params[f"{prefix}_attempts"] = step.attempts = attempts
    step.status = status.value
    step.last_error = error
    return columns, params
