"""An activation on PostgreSQL in two statements rather than six.

The first statement is a chain of data-modifying CTEs: the journal's last step done; the
contact `active` (only while this runner holds its lease and it is still provisioning); and,
only if that row moved, its outbox event (with its kept `no_endpoint` delivery when the
account has no enabled endpoint) and its ledger rows (the capture, and the month's fee when one
is due; a key already there is not written again). The second is the account's balance, last,
because every activation of the account waits for that row's lock until the commit: the worker
sends it with the COMMIT in one round trip (`credits.settle_and_commit`), so the lock is held
for the server's time only. SQLite runs the same steps statement by statement
(`worker.store.pipeline.activate`).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from worker.store import credits, driver
from worker.store.models import LedgerEntry
from worker.store.outbox import event_ctes, event_params, kept_delivery

_ledger: Table = LedgerEntry.__table__  # type: ignore[assignment]

_LEDGER_COLUMNS = credits.LEDGER_COLUMNS


def _bind(column: str, prefix: str) -> Any:
    return bindparam(f"{prefix}_{column}", type_=_ledger.c[column].type)


@functools.cache
def _statement(step_update: Any, finish: Any) -> Any:
    # The fence of both writes (the journal's and the contact's): the contact's row locked
    # while this runner holds its lease. The lock is taken first (an InitPlan of each write)
    # and read again if a takeover committed since the statement's snapshot, so a runner
    # that lost its lease writes neither, and no takeover commits until this transaction
    # ends. (A sub-select's own FOR UPDATE in the journal's UPDATE would not do here: the
    # contact's UPDATE in the same statement may come first, and a row changed by the same
    # statement is not locked again.)
    contacts = finish.table
    held = exists(
        select(contacts.c.id)
        .where(contacts.c.id == bindparam("p_id"), contacts.c.lease_owner == bindparam("p_owner"))
        .with_for_update(key_share=True)
        .cte("held")
        .select()
    )
    step = step_update.where(held).cte("step")
    fin = finish.where(held).returning(finish.table.c.id).cte("fin")
    kept = event_ctes(gate=fin)
    now = bindparam("e_created_at", type_=_ledger.c.created_at.type)
    capture = select(*(_bind(c, "c") for c in _LEDGER_COLUMNS), now).select_from(fin)
    fee = (
        select(*(_bind(c, "f") for c in _LEDGER_COLUMNS), now)
        .select_from(fin)
        .where(bindparam("f_due", type_=_ledger.c.amount_cents.type) > 0)
    )
    ledger = (
        pg_insert(_ledger)
        .from_select([*_LEDGER_COLUMNS, "created_at"], capture.union_all(fee))
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(_ledger.c.key)
        .cte("ledger")
    )
    return select(
        exists(select(fin.c.id)).label("finished"),
        exists(select(kept.c.id)).label("kept"),
        select(func.array_agg(ledger.c.key)).scalar_subquery().label("written"),
    ).add_cte(step)


def activate_in_one(
    session: Session,
    *,
    step_update: Any,
    step_params: dict[str, Any],
    finish: Any,
    finish_params: dict[str, Any],
    event: dict[str, Any],
    ledger: list[dict[str, Any]],
    now: datetime,
) -> tuple[bool, bool, set[str]]:
    """Run the first statement: whether the contact moved to `active`, whether its event was
    kept at once (it has nowhere to go), and the ledger keys it wrote. `step_update` is the
    journal row's UPDATE (binds `s_*`; unfenced, the fence is this statement's), `finish`
    the contact's (binds in `finish_params`), `event` the event's row (`outbox.event_row`),
    `ledger` the activation's rows."""
    capture, *rest = ledger
    fee_row = rest[0] if rest else {**capture, "key": "", "kind": "monthly_fee"}
    params: dict[str, Any] = {
        **step_params,
        **finish_params,
        **event_params(event, kept_delivery(event, now)),
        **{f"c_{c}": capture[c] for c in _LEDGER_COLUMNS},
        **{f"f_{c}": fee_row[c] for c in _LEDGER_COLUMNS},
        "f_due": 1 if rest else 0,
    }
    (row,) = driver.rows(session.connection(), _statement(step_update, finish), params)
    return bool(row.finished), bool(row.kept), set(row.written or ())
