"""The steps' access to the shared pool of WhatsApp senders: each call one short write
transaction of its own (worker/store/pool.py), made under the contact's lease and fenced by
its owner (`store.hold_lease`, in the same transaction): `LeaseLost` when it is not ours."""

from __future__ import annotations

from datetime import datetime

from worker.settings import Settings
from worker.store import pool as store
from worker.store.db import Database
from worker.store.models import Contact, PoolSender


class PoolAccess:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.max_senders = settings.whatsapp_pool_max_senders

    def take(
        self,
        contact: Contact,
        owner: str,
        user_number: str | None,
        now: datetime,
        *,
        may_grow: bool,
    ) -> store.Taken:
        with self.db.write() as session:
            store.hold_lease(session, contact.id, owner)
            return store.take_route(
                session, contact, user_number, self.max_senders, now, may_grow=may_grow
            )

    def record_growth(
        self, contact_id: str, owner: str, sender_id: int, now: datetime, **made: str | None
    ) -> None:
        with self.db.write() as session:
            store.hold_lease(session, contact_id, owner)
            store.record_growth(session, sender_id, now, **made)

    def mark_online(self, contact_id: str, owner: str, sender_id: int, now: datetime) -> None:
        with self.db.write() as session:
            store.hold_lease(session, contact_id, owner)
            store.mark_online(session, sender_id, now)

    def grown_by(self, contact_id: str) -> list[PoolSender]:
        with self.db.read() as session:
            return store.grown_by(session, contact_id)

    def mark_failed(
        self, contact_id: str, owner: str, sender_id: int, error: str, now: datetime
    ) -> None:
        with self.db.write() as session:
            store.hold_lease(session, contact_id, owner)
            store.mark_failed(session, sender_id, error, now)

    def release_route(self, contact_id: str, owner: str) -> int:
        with self.db.write() as session:
            store.hold_lease(session, contact_id, owner)
            return store.release_route(session, contact_id)
