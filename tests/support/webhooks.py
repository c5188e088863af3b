"""Helpers for webhook tests: fast settings, deliveries as stored, events and endpoints made
directly in the store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from support.pipeline import FAST as PIPELINE_FAST
from worker.domain.ids import new_id
from worker.store import webhooks as webhook_store
from worker.store.models import Event, WebhookDelivery

FAST: dict[str, Any] = {
    **PIPELINE_FAST,
    "webhook_retry_schedule": (1, 1, 1, 1, 1, 1),
    "webhook_timeout_s": 2.5,
    "webhook_relay_interval_s": 0.5,
    "webhook_relay_grace_s": 1.0,
}
# Every URL the issue lists as refused, and why. Used at set time and at delivery time too
# (tests/integration/webhooks) and in the unit tests.
REFUSED_URLS = {
    "ftp://example.com/hook": "scheme",
    "file:///etc/passwd": "scheme",
    "gopher://example.com/": "scheme",
    "javascript:alert(1)": "scheme",
    "http://user:pw@example.com/": "credentials",
    "http://2130706433/": "odd_address",  # decimal 127.0.0.1
    "http://0x7f000001/": "odd_address",  # hex
    "http://0x7f.1/": "odd_address",
    "http://0177.0.0.1/": "odd_address",  # octal
    "http://127.1/": "odd_address",  # short form
    "http://127.000.000.001/": "odd_address",
    "http://localhost:8000/": "loopback",
    "http://api.localhost/": "loopback",
    "http://127.0.0.1/": "loopback",
    "http://[::1]/": "loopback",
    "http://[::ffff:127.0.0.1]/": "loopback",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/": "loopback",
    "http://[64:ff9b::a00:1]/": "private",  # NAT64 of 10.0.0.1
    "http://[2002:a00:1::1]/": "private",  # 6to4 of 10.0.0.1
    "http://10.0.0.1/": "private",
    "http://172.16.5.4/": "private",
    "http://192.168.1.1/": "private",
    "http://[fc00::1]/": "private",
    "http://169.254.169.254/latest/meta-data/": "link_local",
    "http://[fe80::1]/": "link_local",
    "http://100.64.0.1/": "cgnat",
    "http://224.0.0.1/": "multicast",
    "http://[ff02::1]/": "multicast",
    "http://240.0.0.1/": "reserved",
    "http://0.0.0.0/": "unspecified",
    "http://[::]/": "unspecified",
}


PHONE = {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"}


def deliveries(db, **where: Any) -> list[WebhookDelivery]:
    from sqlalchemy import select

    with db.read() as session:
        query = select(WebhookDelivery).filter_by(**where).order_by(WebhookDelivery.created_at)
        return list(session.execute(query).scalars())


def add_event(db, account_id: int, contact_id: str | None = None) -> str:
    """An outbox row as the pipeline writes it (for delivery tests that need no provider)."""
    contact_id = contact_id or new_id("ct")
    now = datetime.now(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    with db.write() as session:
        event = Event(id=new_id("evt"), account_id=account_id, contact_id=contact_id,
                      type="contact.active", created_at=now,
                      payload={"type": "contact.active", "timestamp": stamp,
                               "data": {"id": contact_id, "status": "active"}})
        session.add(event)
    return event.id


def set_endpoint_unchecked(db, account_id: int, url: str) -> str:
    """Store an endpoint without the set-time check (to test the delivery-time check)."""
    from worker.domain.webhooks import new_secret

    with db.write() as session:
        endpoint, _ = webhook_store.set_endpoint(session, account_id, url, new_secret(),
                                                 datetime.now(UTC))
        return endpoint.secret
