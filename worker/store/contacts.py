"""Contact rows: accept (insert with the cost reserved), fetch and list them for the API."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import ColumnDefault, ColumnElement, Connection, Table, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.domain.contacts import LIVE_STATUSES, ContactStatus, ContactType
from worker.domain.ids import new_id
from worker.domain.validation import ContactRequest
from worker.store import accounts, credits, idempotency
from worker.store.idempotency import StoredResponse
from worker.store.models import Contact, ContactStep, LedgerEntry


def pending_contact(
    account_id: int,
    assistant_id: int,
    request: ContactRequest,
    cost_cents: int,
    now: datetime,
    monthly_cents: int = 0,
) -> Contact:
    """A newly accepted contact, as both the single and the batch route record it."""
    return Contact(
        id=new_id("ct"),
        account_id=account_id,
        assistant_id=assistant_id,
        contact_type=request.contact_type.value,
        status=ContactStatus.PENDING.value,
        request=request.as_dict(),
        whatsapp_sender=request.fields.get("whatsapp_sender")
        if request.contact_type is ContactType.WHATSAPP
        else None,
        setup_cost_cents=cost_cents,
        monthly_cost_cents=monthly_cents,
        charged=False,
        reservation_seq=1,
        deliveries=0,
        created_at=now,
        updated_at=now,
    )


def live_contact_exists(session: Session, assistant_id: int, contact_type: str) -> bool:
    return (
        session.execute(
            select(Contact.id).where(
                Contact.assistant_id == assistant_id,
                Contact.contact_type == contact_type,
                Contact.status.in_([s.value for s in LIVE_STATUSES]),
            )
        ).first()
        is not None
    )


def get_contact(
    session: Session, account_id: int, contact_id: str, assistant_id: int | None = None
) -> Contact | None:
    query = select(Contact).where(Contact.id == contact_id, Contact.account_id == account_id)
    if assistant_id is not None:
        query = query.where(Contact.assistant_id == assistant_id)
    return session.execute(query).scalar_one_or_none()


def list_contacts(
    session: Session, account_id: int, assistant_id: int, limit: int, starting_after: str | None
) -> Sequence[Contact]:
    return page_of_contacts(
        session, account_id, Contact.assistant_id == assistant_id, limit, starting_after
    )


def page_of_contacts(
    session: Session,
    account_id: int,
    condition: ColumnElement[bool],
    limit: int,
    starting_after: str | None,
) -> Sequence[Contact]:
    """A page of the account's contacts that meet `condition`, in id order, after
    `starting_after` (an id) when given."""
    query = (
        select(Contact)
        .where(Contact.account_id == account_id, condition)
        .order_by(Contact.id)
        .limit(limit)
    )
    if starting_after:
        query = query.where(Contact.id > starting_after)
    return session.execute(query).scalars().all()


def steps_for(session: Session, contact_ids: Sequence[str]) -> dict[str, list[ContactStep]]:
    found: dict[str, list[ContactStep]] = {cid: [] for cid in contact_ids}
    if not contact_ids:
        return found
    rows = session.execute(
        select(ContactStep)
        .where(ContactStep.contact_id.in_(contact_ids))
        .order_by(ContactStep.contact_id, ContactStep.position)
    ).scalars()
    for step in rows:
        found[step.contact_id].append(step)
    return found


class Acceptance(StrEnum):
    ACCEPTED = "accepted"
    NO_ASSISTANT = "no_assistant"  # the assistant does not exist or is another account's
    NO_CREDITS = "no_credits"  # available credits are below the contact's setup cost
    ADDRESS_IN_USE = "address_in_use"  # the address is live on another contact


def address_live(session: Session, address: str) -> bool:
    """Whether `address` (a number or email address) is live on a contact."""
    return (
        session.execute(
            select(Contact.id)
            .where(
                Contact.address == address,
                Contact.status.in_([s.value for s in LIVE_STATUSES]),
            )
            .limit(1)
        ).first()
        is not None
    )


def accept_brought(
    session: Session,
    contact: Contact,
    completion: tuple[str, StoredResponse] | None,
    write_event: Callable[[Session, Contact], None],
) -> Acceptance:
    """Record an address the customer already has: the contact `active` at once, no cost,
    no reservation, its `contact.active` outbox event written by `write_event` in the same
    transaction. Refused (nothing written) when the address is live on another contact;
    the live-contact index raises IntegrityError as in `accept`."""
    if not accounts.assistant_owned(session, contact.account_id, contact.assistant_id):
        return Acceptance.NO_ASSISTANT
    assert contact.address is not None
    if session.get_bind().dialect.name == "postgresql":
        # Serialise the check and insert of one address (SQLite's BEGIN IMMEDIATE does).
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:a))"), {"a": contact.address})
    if address_live(session, contact.address):
        return Acceptance.ADDRESS_IN_USE
    session.add(contact)
    session.flush()
    write_event(session, contact)
    if completion is not None:
        idempotency.complete(session, contact.account_id, *completion)
    return Acceptance.ACCEPTED


def accept(
    session: Session, contact: Contact, completion: tuple[str, StoredResponse] | None = None
) -> Acceptance:
    """Record a new pending contact with its cost reserved, statement by statement.

    Runs in the caller's write transaction (on SQLite, BEGIN IMMEDIATE serialises writers).
    Nothing is written unless the result is ACCEPTED: the reservation comes first, so a refusal
    returns before any write, and a live contact of the same type raises IntegrityError from
    the insert (the caller's transaction then rolls the reservation back). `completion`, when
    given, is the Idempotency-Key and the response to store with it.
    """
    if not accounts.assistant_owned(session, contact.account_id, contact.assistant_id):
        return Acceptance.NO_ASSISTANT
    if not credits.try_reserve(session, contact.account_id, contact.setup_cost_cents):
        return Acceptance.NO_CREDITS
    session.add(contact)
    session.flush()  # the live-contact unique index speaks here
    credits.record(
        session,
        contact.account_id,
        contact.id,
        "reserve",
        contact.setup_cost_cents,
        credits.reservation_key(contact.id, contact.reservation_seq),
    )
    if completion is not None:
        idempotency.complete(session, contact.account_id, *completion)
    return Acceptance.ACCEPTED


@dataclass
class Pending:
    """One contact to accept: the row, and the Idempotency-Key completion to store with it."""

    contact: Contact
    completion: tuple[str, StoredResponse] | None = None


def accept_together(connection: Connection, batch: Sequence[Pending]) -> Acceptance:
    """Accept contacts of one account in one PostgreSQL statement: all of them, or none.

    For a connection in autocommit mode. The ownership check, the conditional reserve
    UPDATE (of the sum of the setup costs), the contact and ledger INSERTs and the
    Idempotency-Key completions are data-modifying CTEs of one statement, so accepting is one
    round trip and one commit. That matters because every acceptance of an account updates
    the same `accounts` row, whose lock is held until the commit is flushed to disk: with one
    statement in autocommit the lock is held only while the server runs it and flushes, never
    while a Python thread waits for the GIL to send the next statement; and a batch shares one
    lock hold and one flush among all its contacts (see `GroupAcceptor`).

    The guarantees of `accept`: the reserve is one conditional UPDATE (read committed re-checks
    `balance - reserved >= total` after waiting for the row lock); contacts are inserted only
    if the reserve happened, which it does only if every assistant is the account's; ledger
    rows only for inserted contacts. A live contact of the same type for any of them makes the
    INSERT raise IntegrityError, which aborts the whole statement, reservation included.
    Returns ACCEPTED, or NO_ASSISTANT / NO_CREDITS having written nothing.
    """
    rows = []
    for pending in batch:
        row = _row_values(CONTACTS, pending.contact)
        row["ledger_key"] = credits.reservation_key(
            pending.contact.id, pending.contact.reservation_seq
        )
        if pending.completion is not None:
            key, response = pending.completion
            row.update(
                k_key=key,
                k_status=response.status,
                k_body=response.body,
                k_headers=response.headers,
            )
        rows.append(row)
    account_ids = {row["account_id"] for row in rows}
    if len(account_ids) != 1:
        raise ValueError("a batch holds contacts of one account")
    columns = tuple(dict.fromkeys(n for row in rows for n in row if n in CONTACTS.c))
    params = {
        "account_id": account_ids.pop(),
        "total": sum(row["setup_cost_cents"] for row in rows),
        # One JSON document rather than one array per column: orjson renders it in
        # microseconds, where adapting a dozen typed arrays costs psycopg far more.
        "batch": orjson.dumps(rows).decode(),
    }
    completions = any(p.completion is not None for p in batch)
    row = connection.exec_driver_sql(_batch_sql(columns, completions), params).one()
    if not row.owned:
        return Acceptance.NO_ASSISTANT
    if not row.reserved:
        return Acceptance.NO_CREDITS
    return Acceptance.ACCEPTED


CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
LEDGER: Table = LedgerEntry.__table__  # type: ignore[assignment]
IDEMPOTENCY: Table = Contact.metadata.tables["idempotency_keys"]


@functools.cache
def _batch_sql(columns: tuple[str, ...], complete_keys: bool) -> str:
    """The statement of `accept_together` for contacts that set `columns`.

    Parameters: `account_id`, `total` (the sum of the setup costs) and `batch`, a JSON array
    with one object per contact: its columns, `ledger_key`, and with `complete_keys` the
    Idempotency-Key record's `k_key`, `k_status`, `k_body` and `k_headers` (absent: null).
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    def sql_type(table: Table, name: str) -> str:
        return str(table.c[name].type.compile(dialect=dialect))

    fields = [f"{n} {sql_type(CONTACTS, n)}" for n in columns]
    fields.append(f"ledger_key {sql_type(LEDGER, 'key')}")
    if complete_keys:
        fields += [
            f"k_key {sql_type(IDEMPOTENCY, 'key')}",
            "k_status INTEGER",
            "k_body JSON",
            "k_headers JSON",
        ]
    names = ", ".join(columns)
    completed = ""
    if complete_keys:
        completed = """
, completed AS (
    UPDATE idempotency_keys AS k
    SET completed = true, response_status = b.k_status, response_body = b.k_body,
        response_headers = b.k_headers
    FROM batch AS b JOIN inserted AS i ON i.id = b.id
    WHERE k.account_id = %(account_id)s AND k.key = b.k_key
    RETURNING k.id
)"""
    return f"""
WITH batch AS (
    SELECT * FROM json_to_recordset(%(batch)s::JSON) AS b({", ".join(fields)})
), owned AS (
    -- By primary key only: an index condition on account_id could make the planner visit
    -- every assistant of a large account.
    SELECT count(*) FILTER (WHERE account_id = %(account_id)s) AS n FROM assistants
    WHERE id = ANY(ARRAY(SELECT assistant_id FROM batch))
), reserved AS (
    UPDATE accounts SET reserved_cents = reserved_cents + %(total)s
    WHERE id = %(account_id)s AND balance_cents - reserved_cents >= %(total)s
      AND (SELECT n FROM owned) = (SELECT count(DISTINCT assistant_id) FROM batch)
    RETURNING id
), inserted AS (
    INSERT INTO contacts ({names})
    SELECT {", ".join(f"b.{n}" for n in columns)} FROM batch AS b, reserved
    RETURNING id
), recorded AS (
    INSERT INTO credit_ledger (account_id, contact_id, kind, amount_cents, key, created_at)
    SELECT b.account_id, b.id, 'reserve', b.setup_cost_cents, b.ledger_key, b.created_at
    FROM batch AS b JOIN inserted AS i ON i.id = b.id
    ON CONFLICT (key) DO NOTHING
    RETURNING id
){completed}
SELECT (SELECT n FROM owned) = (SELECT count(DISTINCT assistant_id) FROM batch) AS owned,
       EXISTS (SELECT 1 FROM reserved) AS reserved
"""  # noqa: S608 - only table metadata is interpolated


@dataclass(eq=False)
class _Waiter:
    item: Pending
    event: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # promoted to run the next batch
    outcome: Acceptance | None = None
    error: BaseException | None = None

    def result(self) -> Acceptance:
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


@dataclass(eq=False)
class _AccountState:
    running: int = 0  # batches being accepted now (at most `in_flight`)
    queue: list[_Waiter] = field(default_factory=list)  # waiting for a slot, oldest first


class GroupAcceptor:
    """Group commit of acceptances, per account, across the threads of one process.

    Every acceptance of an account updates its one `accounts` row, and PostgreSQL holds that
    row's lock until the commit is flushed, so one account's acceptances commit one at a time,
    one WAL flush each, however many connections send them. Here at most `in_flight` batches
    of an account are being accepted at once; while they are, that account's other requests
    queue, and the first slot to free up takes the whole queue (up to `max_batch`) as its
    next batch: one statement (`accept_together`), one lock hold, one flush. No timer: an idle
    account's request is sent at once, alone; batches form only under load. Two slots rather
    than one let a batch be prepared and sent while the other waits for its flush.

    `after_commit`, when given, is called by the thread that ran a batch with the contacts it
    accepted, before their requests are let go (the service publishes them there, together);
    it must not raise.

    Each batch is run by `accept_batch`.
    """

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[Connection]],
        *,
        after_commit: Callable[[list[Contact]], None] | None = None,
        in_flight: int = 2,
        max_batch: int = 100,
    ) -> None:
        self._connect = connect
        self._after_commit = after_commit
        self._in_flight = in_flight
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._accounts: dict[int, _AccountState] = {}

    def accept(self, contact: Contact, completion: tuple[str, StoredResponse] | None) -> Acceptance:
        me = _Waiter(Pending(contact, completion))
        account = contact.account_id
        with self._lock:
            state = self._accounts.get(account)
            if state is None:
                state = self._accounts[account] = _AccountState()
            if state.running < self._in_flight:
                state.running += 1  # a free slot: go at once, alone
                batch = [me]
            else:
                state.queue.append(me)  # wait for a slot, and take the queue along
                batch = None
        if batch is None:
            me.event.wait()
            if not me.lead:
                return me.result()
            with self._lock:
                batch = [me, *state.queue[: self._max_batch - 1]]
                del state.queue[: self._max_batch - 1]
        try:
            self._run(batch)
            accepted = [w.item.contact for w in batch if w.outcome is Acceptance.ACCEPTED]
            if accepted and self._after_commit is not None:
                self._after_commit(accepted)
        finally:
            with self._lock:
                if state.queue:  # hand the slot on to the longest waiter
                    successor = state.queue.pop(0)
                    successor.lead = True
                    successor.event.set()
                else:
                    state.running -= 1
                    if not state.running:
                        del self._accounts[account]
            for waiter in batch:
                if waiter is not me:
                    waiter.event.set()
        return me.result()

    def _run(self, batch: list[_Waiter]) -> None:
        results = accept_batch(self._connect, [w.item for w in batch])
        for waiter, result in zip(batch, results, strict=True):
            if isinstance(result, Acceptance):
                waiter.outcome = result
            else:
                waiter.error = result


def accept_batch(
    connect: Callable[[], AbstractContextManager[Connection]], batch: Sequence[Pending]
) -> list[Acceptance | BaseException]:
    """Accept contacts of one account together: each one's outcome, or the error it met.

    One statement for all of them when they can all be accepted. A batch is all-or-nothing,
    so when it is refused (some assistant not the account's, not enough credits for the
    total, a live contact already there: nothing was written) its contacts are accepted again
    one by one, each with the exact outcome it would have had alone. Other errors (the
    database gone) are every member's error, as they would have been.
    """
    if len(batch) > 1:
        try:
            with connect() as connection:
                outcome = accept_together(connection, batch)
        except IntegrityError:
            outcome = None  # statement aborted: nothing written
        except BaseException as exc:
            return [exc] * len(batch)
        if outcome is Acceptance.ACCEPTED:
            return [outcome] * len(batch)
    results: list[Acceptance | BaseException] = []
    for item in batch:
        try:
            with connect() as connection:
                results.append(accept_together(connection, [item]))
        except BaseException as exc:
            results.append(exc)
    return results


def _row_values(table: Table, row: object) -> dict[str, Any]:
    """Column values of an ORM object not yet flushed, Python-side defaults applied.

    The INSERT of `accept_together` takes its rows from a JSON document, so SQLAlchemy does
    not apply the columns' Python-side defaults: they are applied here. A column left None
    with no Python-side default is omitted (NULL, or its server default).
    """
    values: dict[str, Any] = {}
    for column in table.columns:
        value = getattr(row, column.key, None)
        default = column.default
        if value is None and isinstance(default, ColumnDefault):
            value = default.arg(None) if default.is_callable else default.arg  # type: ignore[operator]
        if value is not None:
            values[column.name] = value
    return values
