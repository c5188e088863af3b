"""The operators' console's questions: what the queues, contacts, batches, deliveries and
accounts look like now, and the two buttons (retry a contact, redrive a delivery)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from worker.app.contacts import Publisher
from worker.app.operations import failed_contacts, retry_contact
from worker.app.webhooks import WebhookService
from worker.domain.contacts import SETTLED_STATUSES, ContactStatus
from worker.domain.money import format_amount
from worker.live import NoNotifier, Notifier
from worker.metrics import queue_keys
from worker.settings import Settings
from worker.store.db import Database
from worker.store.models import (
    Account,
    Batch,
    Contact,
    LedgerEntry,
    WebhookAttempt,
    WebhookDelivery,
)

QUEUES = ("interactive", "bulk", "webhooks")
CHART_MINUTES = 30


@dataclass(frozen=True)
class Minute:
    label: str  # HH:MM, UTC
    accepted: int
    finished: int


class Console:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        publisher: Publisher,
        webhooks: WebhookService,
        notifier: Notifier | NoNotifier,
        redis_client: Any,
    ) -> None:
        self.db, self.settings, self.publisher = db, settings, publisher
        self.webhooks, self.notifier, self.redis = webhooks, notifier, redis_client

    # --- overview ----------------------------------------------------------------------------

    def queue_depths(self) -> dict[str, int | None]:
        """Messages waiting per Celery queue (None when Redis does not answer)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for queue in QUEUES:
                for key in queue_keys(queue):
                    pipe.llen(key)
            lengths = iter(pipe.execute())
            return {q: sum(next(lengths) for _ in queue_keys(q)) for q in QUEUES}
        except Exception:
            return dict.fromkeys(QUEUES)

    def overview(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        day_ago = now - timedelta(hours=24)
        start = (now - timedelta(minutes=CHART_MINUTES - 1)).replace(second=0, microsecond=0)
        with self.db.read() as session:
            by_status = dict(
                session.execute(
                    select(Contact.status, func.count())
                    .where(Contact.created_at >= day_ago)
                    .group_by(Contact.status)
                ).all()
            )
            accepted = session.execute(
                select(Contact.created_at).where(Contact.created_at >= start)
            ).scalars()
            accepted_per = Counter(t.strftime("%H:%M") for t in accepted)
            finished = session.execute(
                select(Contact.updated_at).where(
                    Contact.updated_at >= start,
                    Contact.status.in_([s.value for s in SETTLED_STATUSES]),
                )
            ).scalars()
            finished_per = Counter(t.strftime("%H:%M") for t in finished)
        minutes = []
        for i in range(CHART_MINUTES):
            label = (start + timedelta(minutes=i)).strftime("%H:%M")
            minutes.append(Minute(label, accepted_per[label], finished_per[label]))
        statuses = {s.value: by_status.get(s.value, 0) for s in ContactStatus}
        statuses.update(by_status)
        return {
            "queues": self.queue_depths(),
            "statuses": statuses,
            "minutes": minutes,
            "peak": max([1] + [max(m.accepted, m.finished) for m in minutes]),
        }

    # --- batches -----------------------------------------------------------------------------

    def batches(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.execute(
                select(Batch).order_by(Batch.created_at.desc()).limit(limit)
            ).scalars()
            batches = [(b.id, b.account_id, b.total, b.created_at) for b in rows]
            counts: dict[str, Counter[str]] = {b[0]: Counter() for b in batches}
            if batches:
                for batch_id, status, n in session.execute(
                    select(Contact.batch_id, Contact.status, func.count())
                    .where(Contact.batch_id.in_(list(counts)))
                    .group_by(Contact.batch_id, Contact.status)
                ):
                    counts[batch_id][status] = n
        return [_batch_view(i, a, t, c, counts[i]) for i, a, t, c in batches]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with self.db.read() as session:
            found = session.get(Batch, batch_id)
            if found is None:
                return None
            contacts = session.execute(
                select(Contact).where(Contact.batch_id == batch_id).order_by(Contact.id)
            ).scalars()
            rows = [_contact_row(c) for c in contacts]
            view = _batch_view(
                found.id,
                found.account_id,
                found.total,
                found.created_at,
                Counter(r["status"] for r in rows),
            )
        return {**view, "contacts": rows}

    # --- failed contacts ---------------------------------------------------------------------

    def failed(self, limit: int = 100) -> list[dict[str, Any]]:
        return failed_contacts(self.db, limit)

    def retry(self, contact_id: str) -> dict[str, Any]:
        """What `provisioner jobs retry` does."""
        return retry_contact(self.db, self.settings, self.publisher, contact_id, self.notifier)

    # --- webhook deliveries ------------------------------------------------------------------

    def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = list(
                session.execute(
                    select(WebhookDelivery).order_by(WebhookDelivery.created_at.desc()).limit(limit)
                ).scalars()
            )
            last: dict[str, WebhookAttempt] = {}
            if rows:
                for attempt in session.execute(
                    select(WebhookAttempt)
                    .where(WebhookAttempt.delivery_id.in_([d.id for d in rows]))
                    .order_by(WebhookAttempt.attempted_at)
                ).scalars():
                    last[attempt.delivery_id] = attempt
            return [
                {
                    "event_id": d.event_id,
                    "account_id": d.account_id,
                    "contact_id": d.contact_id,
                    "type": d.type,
                    "status": d.status,
                    "attempts": d.attempts,
                    "last_outcome": last[d.id].outcome if d.id in last else None,
                    "last_error": last[d.id].error if d.id in last else None,
                    "created_at": d.created_at.isoformat(timespec="seconds"),
                }
                for d in rows
            ]

    def redrive(self, event_id: str) -> list[str]:
        """What `provisioner webhooks redrive` does, for one delivery; the caller publishes."""
        return self.webhooks.redrive(failed_only=False, since=None, event_id=event_id)

    # --- accounts ----------------------------------------------------------------------------

    def accounts(self, limit: int = 200) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.execute(select(Account).order_by(Account.id).limit(limit)).scalars()
            return [_account_view(a) for a in rows]

    def account(self, account_id: int, limit: int = 200) -> dict[str, Any] | None:
        with self.db.read() as session:
            found = session.get(Account, account_id)
            if found is None:
                return None
            ledger = session.execute(
                select(LedgerEntry)
                .where(LedgerEntry.account_id == account_id)
                .order_by(LedgerEntry.id.desc())
                .limit(limit)
            ).scalars()
            return {
                **_account_view(found),
                "ledger": [
                    {
                        "id": e.id,
                        "kind": e.kind,
                        "amount": format_amount(e.amount_cents),
                        "contact_id": e.contact_id,
                        "created_at": e.created_at.isoformat(timespec="seconds"),
                    }
                    for e in ledger
                ],
            }


def _batch_view(
    batch_id: str, account_id: int, total: int, created: datetime, counts: Counter[str]
) -> dict[str, Any]:
    finished = sum(counts[s.value] for s in SETTLED_STATUSES)
    return {
        "id": batch_id,
        "account_id": account_id,
        "total": total,
        "counts": dict(counts),
        "finished": finished,
        "percent": round(100 * finished / total) if total else 100,
        "done": finished >= total,
        "created_at": created.isoformat(timespec="seconds"),
    }


def _contact_row(c: Contact) -> dict[str, Any]:
    request = c.request or {}
    name = " ".join(str(request.get(k) or "") for k in ("first_name", "last_name")).strip()
    return {
        "id": c.id,
        "assistant_id": c.assistant_id,
        "contact_type": c.contact_type,
        "status": c.status,
        "name": name,
        "email_local": request.get("email_local"),
        "address": c.address,
        "error": c.error_message,
    }


def _account_view(a: Account) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "balance": format_amount(a.balance_cents),
        "reserved": format_amount(a.reserved_cents),
        "available": format_amount(a.balance_cents - a.reserved_cents),
    }
