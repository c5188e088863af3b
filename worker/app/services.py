"""The use cases wired together over one database: what the API process builds at start."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from worker.app.accounts import Authenticator
from worker.app.batches import BatchService
from worker.app.connections import ConnectionService
from worker.app.contacts import ContactService, Publisher
from worker.app.events import EventFeed
from worker.app.lifecycle import LifecycleService
from worker.app.regulatory import RegulatoryService
from worker.app.webhooks import WebhookService
from worker.live import NoNotifier, Notifier
from worker.settings import Settings
from worker.store.db import Database


@dataclass(frozen=True)
class Services:
    db: Database
    contacts: ContactService
    batches: BatchService
    webhooks: WebhookService
    accounts: Authenticator
    lifecycle: LifecycleService
    events: EventFeed
    publisher: Publisher
    connections: ConnectionService
    regulatory: RegulatoryService

    @classmethod
    def build(
        cls,
        settings: Settings,
        publisher: Publisher,
        db: Database | None = None,
        notifier: Notifier | NoNotifier | None = None,
    ) -> Services:
        db = db or Database(settings.database_url)
        connections = ConnectionService(db, settings)
        regulatory = RegulatoryService(db, settings)
        contacts = ContactService(
            db, settings, publisher, connections=connections, regulatory=regulatory
        )
        return cls(
            db=db,
            contacts=contacts,
            batches=BatchService(contacts),
            webhooks=WebhookService(db, settings),
            accounts=Authenticator(db),
            lifecycle=LifecycleService(db, settings, publisher, notifier=notifier),
            events=EventFeed(db),
            publisher=publisher,
            connections=connections,
            regulatory=regulatory,
        )

    def database_status(self) -> str:
        """`ok`, or the name of the error that a trivial query met."""
        try:
            with self.db.read() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:
            return type(exc).__name__
        return "ok"


__all__ = ["Database", "Services"]
