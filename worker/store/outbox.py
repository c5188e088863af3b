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

from sqlalchemy import Connection, Table, bindparam, case, exists, insert, null, select
from sqlalchemy.orm import Session

from worker.domain.ids import new_id
from worker.domain.views import contact_view
from worker.store.models import Contact, ContactStep, Event, WebhookDelivery, WebhookEndpoint
from worker.store.webhooks import delivery_row

_events: Table = Event.__table__  # type: ignore[assignment]
_endpoints: Table = WebhookEndpoint.__table__  # type: ignore[assignment]
_deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]

_NOW = bindparam("p_now", type_=_events.c.created_at.type)
_HAS_ENDPOINT = exists().where(
    _endpoints.c.account_id == bindparam("p_account", type_=_endpoints.c.account_id.type),
    _endpoints.c.disabled_at.is_(None),
)
_EVENT_COLUMNS = ("id", "account_id", "contact_id", "type", "payload", "created_at")
# Dispatched at once (now) when the account has no enabled endpoint: the same statement
# looks, so the decision and the row are one snapshot.
_INSERT_EVENT = (
    insert(_events)
    .values(
        {
            **{name: bindparam(name, type_=_events.c[name].type) for name in _EVENT_COLUMNS},
            "dispatched_at": case((_HAS_ENDPOINT, null()), else_=_NOW),
        }
    )
    .returning(_events.c.dispatched_at)
)
_INSERT_KEPT = insert(_deliveries)
# PostgreSQL: the event and, if it was dispatched at once, its kept delivery in one statement
# (the delivery's values bound as `d_<column>`); a row back means the delivery was written.
_EVENT = _INSERT_EVENT.cte("event")
_DELIVERY_COLUMNS = tuple(delivery_row("", 0, "", "", datetime.now(UTC), pending=False))
_INSERT_EVENT_AND_KEPT = (
    insert(_deliveries)
    .from_select(
        _DELIVERY_COLUMNS,
        select(*(bindparam(f"d_{n}", type_=_deliveries.c[n].type) for n in _DELIVERY_COLUMNS))
        .select_from(_EVENT)
        .where(_EVENT.c.dispatched_at.is_not(None)),
    )
    .returning(_deliveries.c.id)
)


def outbox(
    session: Session,
    contact: Contact,
    steps: Sequence[ContactStep],
    now: datetime,
    events: list[str] | None,
) -> None:
    """Write the contact's event. If it is to be delivered, its id is appended to `events`
    (if given), so the caller can publish its delivery after the commit."""
    view = contact_view(contact, steps)
    event_id = new_id("evt")
    kind = f"contact.{contact.status}"
    connection: Connection = session.connection()
    params = {
        "id": event_id,
        "account_id": contact.account_id,
        "contact_id": contact.id,
        "type": kind,
        "payload": {"type": kind, "timestamp": view["updated_at"], "data": view},
        "created_at": now,
        "p_account": contact.account_id,
        "p_now": now,
    }
    kept = delivery_row(event_id, contact.account_id, contact.id, kind, now, pending=False)
    if connection.dialect.name == "postgresql":
        params.update({f"d_{name}": value for name, value in kept.items()})
        delivered_now = connection.execute(_INSERT_EVENT_AND_KEPT, params).first() is not None
    else:
        delivered_now = connection.execute(_INSERT_EVENT, params).scalar_one() is not None
        if delivered_now:
            connection.execute(_INSERT_KEPT, kept)
    if not delivered_now and events is not None:
        events.append(event_id)
