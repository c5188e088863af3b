"""Celery tasks: thin adapters that load nothing themselves and call the pipeline.

`register(app, runtime)` binds the tasks to an app and to the process's runtime (database,
provider clients), which is built once per worker process on first use.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import structlog
from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready
from sqlalchemy.exc import DBAPIError

from worker import health
from worker.app.lifecycle import LifecycleService
from worker.app.regulations import RegulationsRefresher
from worker.app.retention import RetentionService
from worker.domain.contacts import FirstRun
from worker.providers import Providers
from worker.runtime.celery_app import (
    BILLING_TASK,
    DELIVER_WEBHOOK_TASK,
    FIRST_RUN_HEADER,
    LIVENESS_TASK,
    PROVISION_TASK,
    PURGE_TASK,
    RECONCILE_TASK,
    REGULATIONS_TASK,
    RELAY_WEBHOOKS_TASK,
    SWEEP_TASK,
    WEBHOOK_QUEUE,
    CeleryPublisher,
    share_ack_client,
)
from worker.runtime.delivery import Deliverer, WebhookSender
from worker.runtime.liveness import (
    Heartbeat,
    let_go,
    orphaned_messages,
    take_over_dead_runners,
    worker_id,
)
from worker.runtime.pipeline import Outcome, Pipeline
from worker.runtime.sweep import Sweeper
from worker.settings import Settings
from worker.store import recovery
from worker.store.db import Database

log = structlog.get_logger(__name__)
# A run cut short by a database error runs again after this long.
AFTER_DATABASE_ERROR_S = 1.0


class Runtime:
    """Per-process resources: one database pool, one set of pooled provider clients."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._pipeline: Pipeline | None = None
        self._deliverer: Deliverer | None = None
        self._heartbeat: Heartbeat | None = None
        self._sweeper: Sweeper | None = None
        self._regulations: RegulationsRefresher | None = None

    @property
    def pipeline(self) -> Pipeline:
        # Built lazily and per pid: a prefork child must not share its parent's sockets.
        if self._pipeline is None or self._pid != os.getpid():
            with self._lock:
                if self._pipeline is None or self._pid != os.getpid():
                    db = Database(
                        self.settings.database_url,
                        pool_size=64,
                        pre_ping=False,
                        lock_timeout_ms=self.settings.db_lock_timeout_ms,
                        idle_in_transaction_timeout_ms=self.settings.db_idle_in_transaction_timeout_ms,
                    )
                    providers = Providers.from_settings(self.settings)
                    self._pipeline = Pipeline(db, providers, self.settings)
                    self._pid = os.getpid()
                    # This process runs tasks from now on: it beats while it does.
                    self._heartbeat = Heartbeat(
                        db,
                        self.settings.worker_heartbeat_s,
                        health_file=health.worker_file(self.settings.var_dir),
                    ).start()
        return self._pipeline

    @property
    def sweeper(self) -> Sweeper:
        pipeline = self.pipeline
        if self._sweeper is None or self._sweeper.db is not pipeline.db:
            with self._lock:
                if self._sweeper is None or self._sweeper.db is not pipeline.db:
                    self._sweeper = Sweeper(
                        pipeline.db, pipeline.providers, self.settings, pipeline.email_targets
                    )
        return self._sweeper

    @property
    def regulations(self) -> RegulationsRefresher:
        pipeline = self.pipeline
        if self._regulations is None or self._regulations.db is not pipeline.db:
            with self._lock:
                if self._regulations is None or self._regulations.db is not pipeline.db:
                    self._regulations = RegulationsRefresher(pipeline.db, self.settings)
        return self._regulations

    @property
    def deliverer(self) -> Deliverer:
        pipeline = self.pipeline  # first: a new pid drops the parent's deliverer too
        if self._deliverer is None or self._deliverer.db is not pipeline.db:
            with self._lock:
                if self._deliverer is None or self._deliverer.db is not pipeline.db:
                    sender = WebhookSender(self.settings)
                    self._deliverer = Deliverer(pipeline.db, self.settings, sender)
        return self._deliverer

    def warm(self, **_: object) -> None:
        """Build this process's pipeline (pools, provider clients, its heartbeat) and open a
        database connection now, before the first task: otherwise the first tasks of a new
        worker wait for it behind the build lock (about a second on 2 busy cores)."""
        try:
            with self.pipeline.db.peek() as connection:
                connection.exec_driver_sql("SELECT 1")
        except Exception as exc:  # the first task builds it, or says what is wrong
            log.warning("worker_warm_up_failed", error=f"{type(exc).__name__}: {exc}")

    def warm_on_start(self, pool: str) -> None:
        """Warm up where the tasks run: in this process with the threads (or solo) pool, once
        it is ready; in each child with prefork (the parent runs no task, and must not beat)."""

        def start(**_: object) -> None:
            # Off the consumer's thread: a database slow to answer must not hold it up.
            threading.Thread(target=self.warm, name="warm-up", daemon=True).start()

        (worker_process_init if pool == "prefork" else worker_ready).connect(start, weak=False)

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._deliverer is not None:
            self._deliverer.sender.close()
            self._deliverer = None
        if self._pipeline is not None:
            self._pipeline.providers.close()
            self._pipeline.email_targets.close()
            self._pipeline.limiter.close()
            self._pipeline.notifier.close()
            self._pipeline.close()
            self._pipeline.db.dispose()
            self._pipeline = None


def register(app: Celery, runtime: Runtime) -> None:
    # Publishes the deliveries after every terminal transition without send_task's overhead.
    publisher = CeleryPublisher(app)
    share_ack_client(app)

    @app.task(name=PROVISION_TASK, bind=True, ignore_result=True)
    def provision_contact(self: Task, contact_id: str) -> str:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(task_id=self.request.id, contact_id=contact_id)
        # The API request that published this task (a message header, see CeleryPublisher).
        request_id = getattr(self.request, "request_id", None)
        if request_id:
            structlog.contextvars.bind_contextvars(request_id=request_id)
        # The API's hint for a first run (a header, see CeleryPublisher); None for a retry's.
        first_run = FirstRun.from_header(getattr(self.request, FIRST_RUN_HEADER, None))
        try:
            owner = f"{worker_id()}:{self.request.id}"
            try:
                outcome = runtime.pipeline.run(contact_id, owner, first_run)
            except DBAPIError as exc:
                # The database went away mid-run (a restart, a failover, a terminated
                # connection): let the lease go so the contact runs again in a moment, not
                # after the lease (were the release lost too, the lease still expires).
                log.warning("run_interrupted", error=f"{type(exc.orig).__name__}")
                if not let_go(runtime.pipeline.db, contact_id, owner, AFTER_DATABASE_ERROR_S):
                    raise
                outcome = Outcome("retry", AFTER_DATABASE_ERROR_S)
            if outcome.again_in_s is not None:
                # The lease is already released with a due time; if this publish is lost,
                # the reconciler brings the contact back after that.
                queue = (self.request.delivery_info or {}).get("routing_key") or "interactive"
                app.send_task(
                    PROVISION_TASK,
                    args=[contact_id],
                    queue=queue,
                    countdown=outcome.again_in_s,
                    headers={"request_id": request_id} if request_id else None,
                )
            elif outcome.events:
                publish_webhooks(outcome.events)
            return outcome.state
        finally:
            structlog.contextvars.clear_contextvars()

    def publish_webhooks(event_ids: tuple[str, ...]) -> None:
        """Best effort, after the terminal transition that wrote these events committed: a lost
        publish (or an error here) only delays the delivery until beat's relay finds the event
        (so does an older event of the contact whose publish was lost)."""
        try:
            publisher.deliver_webhooks(event_ids)
        except Exception as exc:
            log.warning("webhook_publish_failed", error=f"{type(exc).__name__}: {exc}")

    @app.task(name=DELIVER_WEBHOOK_TASK, bind=True, ignore_result=True)
    def deliver_webhook(self: Task, event_id: str) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(task_id=self.request.id, event_id=event_id)
        try:
            owner = f"{worker_id()}:{self.request.id}"
            countdown = runtime.deliverer.deliver(event_id, owner)
            if countdown is not None:
                app.send_task(
                    DELIVER_WEBHOOK_TASK, args=[event_id], queue=WEBHOOK_QUEUE, countdown=countdown
                )
        finally:
            structlog.contextvars.clear_contextvars()

    @app.task(name=RELAY_WEBHOOKS_TASK, ignore_result=True)
    def relay_webhooks() -> int:
        """Publish deliveries that are due (long waits) or whose task was lost."""
        due = runtime.deliverer.relay()
        for event_id in due:
            app.send_task(DELIVER_WEBHOOK_TASK, args=[event_id], queue=WEBHOOK_QUEUE)
        if due:
            log.info("webhooks_relayed", count=len(due))
        return len(due)

    @app.task(name=RECONCILE_TASK, ignore_result=True)
    def reconcile() -> int:
        """Re-enqueue open contacts that nothing will bring back by itself."""
        settings = runtime.settings
        db = runtime.pipeline.db
        with db.write() as session:
            due = recovery.due_for_reconcile(
                session, datetime.now(UTC), settings.reconcile_grace_s, settings.reconcile_batch
            )
        for contact_id, batch_id in due:
            app.send_task(
                PROVISION_TASK, args=[contact_id], queue="bulk" if batch_id else "interactive"
            )
        if due:
            log.info("reconciled", count=len(due))
        return len(due)

    @app.task(name=BILLING_TASK, ignore_result=True)
    def billing_pass() -> dict[str, int]:
        """Charge the month's fees; move contacts into, out of and past their grace period."""
        lifecycle = LifecycleService(runtime.pipeline.db, runtime.settings, publisher)
        return lifecycle.billing_pass(events=publisher).as_dict()

    @app.task(name=LIVENESS_TASK, ignore_result=True)
    def take_over_dead() -> int:
        """Publish again the contacts of runners whose worker stopped beating (SIGKILL, OOM,
        a lost host), without waiting for their leases to expire."""
        settings = runtime.settings
        taken = take_over_dead_runners(
            runtime.pipeline.db, datetime.now(UTC), settings.worker_dead_after_s, settings.lease_s
        )
        for contact_id, batch_id in taken:
            app.send_task(
                PROVISION_TASK, args=[contact_id], queue="bulk" if batch_id else "interactive"
            )
        # The messages a dead worker had received but not started die with it: publish again
        # what it may have held, at once (its scheduled retries when they are due).
        orphaned = orphaned_messages(
            runtime.pipeline.db,
            datetime.now(UTC),
            settings.worker_dead_after_s,
            settings.reconcile_grace_s,
            settings.reconcile_batch,
        )
        for contact_id, batch_id, due_in_s in orphaned:
            app.send_task(
                PROVISION_TASK,
                args=[contact_id],
                queue="bulk" if batch_id else "interactive",
                countdown=due_in_s or None,
            )
        return len(taken) + len(orphaned)

    @app.task(name=SWEEP_TASK, ignore_result=True)
    def sweep() -> dict[str, int]:
        """List once more the tags of contacts that ended or went active, and release what
        each should not hold (worker/runtime/sweep.py)."""
        return runtime.sweeper.run()

    @app.task(name=REGULATIONS_TASK, ignore_result=True)
    def refresh_regulations() -> dict[str, int]:
        """Fetch again Twilio's Regulations of the pairs whose cached entry is missing,
        stale or older than the TTL, a bounded number per pass, one pass at a time."""
        return runtime.regulations.run()

    @app.task(name=PURGE_TASK, ignore_result=True)
    def purge_idempotency_keys() -> dict[str, int]:
        """The retention job (the task keeps its first name): expired idempotency keys and
        webhook attempts past their window."""
        purged = RetentionService(runtime.pipeline.db, runtime.settings).run()
        if purged.webhook_attempts or purged.idempotency_keys:
            log.info("retention_purged", **purged.as_dict())
        return purged.as_dict()
