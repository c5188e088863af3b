"""The retention job: deletes webhook delivery attempts older than
`webhook_attempt_retention_days` and idempotency keys past their expiry, in chunks of
`retention_chunk` rows, each chunk its own short transaction (no long lock, no long-running
transaction holding back vacuum). The ledger, contacts, their steps, events and deliveries
are never deleted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from worker.settings import Settings
from worker.store import retention as store
from worker.store.db import Database


@dataclass(frozen=True)
class Purged:
    webhook_attempts: int
    idempotency_keys: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RetentionService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    def run(self, now: datetime | None = None) -> Purged:
        """One pass: everything past its window as of `now` is gone when it returns."""
        now = now or self.clock()
        chunk = self.settings.retention_chunk
        cutoff = now - timedelta(days=self.settings.webhook_attempt_retention_days)
        attempts = keys = 0
        while True:
            with self.db.write() as session:
                n = store.delete_attempts_before(session, cutoff, chunk)
            attempts += n
            if n < chunk:
                break
        while True:
            with self.db.write() as session:
                n = store.delete_expired_keys(session, now, chunk)
            keys += n
            if n < chunk:
                break
        return Purged(webhook_attempts=attempts, idempotency_keys=keys)
