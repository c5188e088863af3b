"""Worker liveness: each worker process's heartbeat, beat's takeover of dead runners' leases,
and letting go of a contact whose run a database fault cut short.

The heartbeat lives in the database, not in Redis: a Redis outage stops no heartbeat, and a
runner that cannot reach the database cannot make progress either. Either way the lease stays
the arbiter (see `worker.store.liveness.take_over_dead`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy.exc import DBAPIError

from worker import health
from worker.store import liveness as store
from worker.store import pipeline as pipeline_store
from worker.store.db import Database

log = structlog.get_logger(__name__)
HOST = socket.gethostname()
# Heartbeats of workers gone this long are dropped.
PRUNE_AFTER_S = 24 * 3600.0


def worker_id() -> str:
    """This worker process, as it prefixes its lease owners (`host:pid:task_id`)."""
    return f"{HOST}:{os.getpid()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Heartbeat:
    """A daemon thread that records this worker process as alive every `interval_s`."""

    def __init__(
        self,
        db: Database,
        interval_s: float,
        *,
        ident: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        health_file: Path | None = None,
    ) -> None:
        self.db = db
        self.interval_s = interval_s
        self.ident = ident or worker_id()
        self.clock = clock
        # Where each attempt is mirrored for the container's liveness probe (worker.health).
        self.health_file = health_file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self.beat()  # before the first task's lease: never a lease without a heartbeat
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def beat(self) -> bool:
        try:
            with self.db.write() as session:
                store.beat(session, self.ident, self.clock())
        except Exception as exc:  # the database is down: so is every runner's progress
            log.warning("heartbeat_failed", error=type(exc).__name__)
            self._mirror(type(exc).__name__)
            return False
        self._mirror("ok")
        return True

    def _mirror(self, database: str) -> None:
        if self.health_file is not None:
            health.record(self.health_file, database=database, worker=self.ident)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        """Stop beating and say so: a stopped worker holds no lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s + 5)
        try:
            with self.db.write() as session:
                store.forget(session, self.ident)
        except Exception as exc:
            log.warning("heartbeat_forget_failed", error=type(exc).__name__)
        if self.health_file is not None:
            health.forget(self.health_file)


def take_over_dead_runners(
    db: Database, now: datetime, dead_after_s: float, lease_s: float
) -> list[tuple[str, str | None]]:
    """Expire the leases of runners whose worker is dead; the contacts to publish again."""
    with db.write() as session:
        taken = store.take_over_dead(session, now, dead_after_s, lease_s)
        store.prune(session, now, max(PRUNE_AFTER_S, dead_after_s))
    if taken:
        log.warning("dead_runners_taken_over", count=len(taken))
    return taken


def orphaned_messages(
    db: Database, now: datetime, dead_after_s: float, grace_s: float, limit: int
) -> list[tuple[str, str | None, float]]:
    """After a worker died: the contacts whose messages it may have held, to publish again
    (`worker.store.liveness.orphaned`), each with its delay."""
    with db.write() as session:
        found = store.orphaned(session, now, dead_after_s, grace_s, limit)
    if found:
        log.warning("dead_worker_messages_republished", count=len(found))
    return found


def let_go(db: Database, contact_id: str, owner: str, again_in_s: float, attempts: int = 3) -> bool:
    """After a database error cut a run short, release its lease (due in `again_in_s`), so
    that the contact runs again at once instead of after the lease. A terminated connection
    invalidates the pool, so the next transaction reconnects; a few tries cover a restart."""
    for attempt in range(attempts):
        try:
            with db.write() as session:
                due = utcnow() + timedelta(seconds=again_in_s)
                pipeline_store.release_lease(session, contact_id, owner, due)
            return True
        except DBAPIError as exc:
            log.warning("lease_release_failed", error=type(exc.orig).__name__, attempt=attempt)
            time.sleep(0.5 * (attempt + 1))
    return False
