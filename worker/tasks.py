"""Celery tasks: thin adapters that load nothing themselves and call the pipeline.

`register(app, runtime)` binds the tasks to an app and to the process's runtime (database,
provider clients), which is built once per worker process on first use.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime

import structlog
from celery import Celery, Task

from worker.celery_app import PROVISION_TASK, PURGE_TASK, RECONCILE_TASK
from worker.pipeline import Pipeline
from worker.providers import Providers
from worker.settings import Settings
from worker.store import idempotency as idem_store
from worker.store import pipeline as pipeline_store
from worker.store.db import Database

log = structlog.get_logger(__name__)
HOST = socket.gethostname()


class Runtime:
    """Per-process resources: one database pool, one set of pooled provider clients."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._pipeline: Pipeline | None = None

    @property
    def pipeline(self) -> Pipeline:
        # Built lazily and per pid: a prefork child must not share its parent's sockets.
        if self._pipeline is None or self._pid != os.getpid():
            with self._lock:
                if self._pipeline is None or self._pid != os.getpid():
                    db = Database(self.settings.database_url, pool_size=64, pre_ping=False)
                    providers = Providers.from_settings(self.settings)
                    self._pipeline = Pipeline(db, providers, self.settings)
                    self._pid = os.getpid()
        return self._pipeline

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.providers.close()
            self._pipeline.limiter.close()
            self._pipeline.db.dispose()
            self._pipeline = None


def register(app: Celery, runtime: Runtime) -> None:
    @app.task(name=PROVISION_TASK, bind=True, ignore_result=True)
    def provision_contact(self: Task, contact_id: str) -> str:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(task_id=self.request.id, contact_id=contact_id)
        try:
            owner = f"{HOST}:{os.getpid()}:{self.request.id}"
            outcome = runtime.pipeline.run(contact_id, owner)
            if outcome.again_in_s is not None:
                # The lease is already released with a due time; if this publish is lost,
                # the reconciler brings the contact back after that.
                queue = (self.request.delivery_info or {}).get("routing_key") or "interactive"
                app.send_task(
                    PROVISION_TASK, args=[contact_id], queue=queue, countdown=outcome.again_in_s
                )
            return outcome.state
        finally:
            structlog.contextvars.clear_contextvars()

    @app.task(name=RECONCILE_TASK, ignore_result=True)
    def reconcile() -> int:
        """Re-enqueue open contacts that nothing will bring back by itself."""
        settings = runtime.settings
        db = runtime.pipeline.db
        with db.write() as session:
            due = pipeline_store.due_for_reconcile(
                session, datetime.now(UTC), settings.reconcile_grace_s, settings.reconcile_batch
            )
        for contact_id, batch_id in due:
            app.send_task(
                PROVISION_TASK, args=[contact_id], queue="bulk" if batch_id else "interactive"
            )
        if due:
            log.info("reconciled", count=len(due))
        return len(due)

    @app.task(name=PURGE_TASK, ignore_result=True)
    def purge_idempotency_keys() -> int:
        with runtime.pipeline.db.write() as session:
            return idem_store.purge_expired(session, datetime.now(UTC))
