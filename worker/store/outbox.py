"""The outbox: one event per status a contact reaches, written in the transaction that moves
it, and the event's webhook delivery when it has nowhere to go.

An event is for the account's endpoint as it is when the event is written. When the account
has no enabled endpoint then, the event is written already dispatched, with its delivery row
`no_endpoint` (listed, never sent), in the same transaction: no delivery task, no second
transaction. Otherwise the event waits for its delivery task (the caller publishes it after
the commit) or for the relay.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, case, exists, insert, null, select
from sqlalchemy.orm import Session

from worker.domain.ids import new_id
from worker.domain.views import contact_view
from worker.store.models import Contact, ContactStep, Event, WebhookDelivery, WebhookEndpoint
from worker.store.webhooks import delivery_row

_events: Table = Event.__table__  # type: ignore[assignment]
_endpoints: Table = WebhookEndpoint.__table__  # type: ignore[assignment]
_deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]

_EVENT_COLUMNS = ("id", "account_id", "contact_id", "type", "payload", "created_at")
_DELIVERY_COLUMNS = tuple(delivery_row("", 0, "", "", datetime.now(UTC), pending=False))


def _e(column: str) -> Any:
    return bindparam(f"e_{column}", type_=_events.c[column].type)


# Dispatched at once (at its created_at) when the account has no enabled endpoint: the same
# statement looks, so the decision and the row are one snapshot.
_DISPATCHED_AT = case(
    (
        exists().where(
            _endpoints.c.account_id == _e("account_id"), _endpoints.c.disabled_at.is_(None)
        ),
        null(),
    ),
    else_=_e("created_at"),
)
_INSERT_EVENT = (  # SQLite: the event, then (below) its kept delivery if it was dispatched
    insert(_events)
    .values({**{name: _e(name) for name in _EVENT_COLUMNS}, "dispatched_at": _DISPATCHED_AT})
    .returning(_events.c.dispatched_at)
)
_INSERT_KEPT = insert(_deliveries)


def event_ctes(gate: Any = None) -> Any:
    """PostgreSQL: the event's INSERT (values bound as `e_<column>`) and, if the event was
    dispatched at once, its kept delivery's (`d_<column>`), as data-modifying CTEs; the
    second, `kept` (returning the delivery's `id`, so a row means the event was kept), is
    returned and brings the first with it. With `gate`, a CTE, they write only if the gate
    returns a row."""
    values = select(*(_e(name) for name in _EVENT_COLUMNS), _DISPATCHED_AT)
    if gate is not None:
        values = values.select_from(gate)
    event = (
        insert(_events)
        .from_select([*_EVENT_COLUMNS, "dispatched_at"], values)
        .returning(_events.c.dispatched_at)
        .cte("event")
    )
    kept = (
        insert(_deliveries)
        .from_select(
            _DELIVERY_COLUMNS,
            select(*(bindparam(f"d_{n}", type_=_deliveries.c[n].type) for n in _DELIVERY_COLUMNS))
            .select_from(event)
            .where(event.c.dispatched_at.is_not(None)),
        )
        .returning(_deliveries.c.id)
        .cte("kept")
    )
    return kept


def kept_delivery(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The `no_endpoint` delivery row of the event `row`, should it have nowhere to go."""
    return delivery_row(
        row["id"], row["account_id"], row["contact_id"], row["type"], now, pending=False
    )


def event_params(row: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `event_ctes` for the event `row` (`event_row`) and its `kept`
    delivery (`kept_delivery`)."""
    return {
        **{f"e_{name}": row[name] for name in _EVENT_COLUMNS},
        **{f"d_{name}": value for name, value in kept.items()},
    }


_KEPT = event_ctes()
_INSERT_EVENT_AND_KEPT = select(exists(select(_KEPT.c.id)).label("kept"))


def outbox(
    session: Session,
    contact: Contact,
    steps: Sequence[ContactStep],
    now: datetime,
    events: list[str] | None,
) -> None:
    """Write the contact's event. If it is to be delivered, its id is appended to `events`
    (if given), so the caller can publish its delivery after the commit."""
    row = event_row(contact, steps, now)
    connection: Connection = session.connection()
    kept = kept_delivery(row, now)
    params = event_params(row, kept)
    if connection.dialect.name == "postgresql":
        delivered_now = connection.execute(_INSERT_EVENT_AND_KEPT, params).scalar_one()
    else:
        delivered_now = connection.execute(_INSERT_EVENT, params).scalar_one() is not None
        if delivered_now:
            connection.execute(_INSERT_KEPT, kept)
    if not delivered_now and events is not None:
        events.append(row["id"])


def event_row(contact: Contact, steps: Sequence[ContactStep], now: datetime) -> dict[str, Any]:
    """The column values of the event of the status the contact is in now."""
    view = contact_view(contact, steps)
    kind = f"contact.{contact.status}"
    return {
        "id": new_id("evt"),
        "account_id": contact.account_id,
        "contact_id": contact.id,
        "type": kind,
        "payload": {"type": kind, "timestamp": view["updated_at"], "data": view},
        "created_at": now,
    }
