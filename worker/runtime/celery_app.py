"""The Celery application, configured for at-least-once delivery of provisioning tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue
from structlog.contextvars import get_contextvars

from worker import tracing
from worker.domain.contacts import FirstRun
from worker.redis_conn import RedisTarget
from worker.settings import Settings

PROVISION_TASK = "worker.tasks.provision_contact"
RECONCILE_TASK = "worker.tasks.reconcile"
PURGE_TASK = "worker.tasks.purge_idempotency_keys"
DELIVER_WEBHOOK_TASK = "worker.tasks.deliver_webhook"
RELAY_WEBHOOKS_TASK = "worker.tasks.relay_webhooks"
BILLING_TASK = "worker.tasks.billing_pass"
LIVENESS_TASK = "worker.tasks.take_over_dead_runners"
SWEEP_TASK = "worker.tasks.sweep"
REGULATIONS_TASK = "worker.tasks.refresh_regulations"
WEBHOOK_QUEUE = "webhooks"  # its own queue: a slow receiver never holds up provisioning
QUEUES = ("interactive", "bulk", WEBHOOK_QUEUE)
# A provisioning message's `FirstRun` hint (worker.domain.contacts): a header, so a worker of
# a version before it reads the message as before.
FIRST_RUN_HEADER = "first_run"


@signals.setup_logging.connect(weak=False)
def _keep_our_logging(**_: object) -> None:
    """Celery configures logging only when nobody answers this signal: worker.logging's
    `configure` has set the root logger up already (JSON through structlog), so Celery's and
    kombu's records are rendered as ours are, not in Celery's own text format."""


def create_celery(
    settings: Settings, *, broker_url: str | None = None, redis: RedisTarget | None = None
) -> Celery:
    """The app on `broker_url`, else on `redis`, else on the settings' Redis (a URL or a
    master behind Sentinel: worker.redis_conn)."""
    app = Celery("provisioner")
    target = RedisTarget(broker_url) if broker_url else redis or RedisTarget.from_settings(settings)
    broker = target.celery_options()
    app.conf.update(
        broker_url=broker["broker_url"],
        # `rediss://`: verify the certificate (kombu would not, unless the URL says so).
        broker_use_ssl=broker.get("broker_use_ssl"),
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        task_default_queue="interactive",
        # At-least-once: ack after the task ran, re-queue when the worker process dies, and
        # take one message at a time so a crash strands at most one per slot.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            # Above the longest task (the hard time limit), so a running task is not redelivered.
            "visibility_timeout": 3600,
            # Workers drain `interactive` before `bulk` (kombu checks queues in this order,
            # each at priority 0, then each at 3, 6, 9: a batch's later contacts wait behind
            # other queues' messages and newer batches' first ones; see queue_priority).
            "queue_order_strategy": "priority",
            # With Sentinel: the master's name, and how to reach the sentinels.
            **broker["broker_transport_options"],
        },
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        task_soft_time_limit=120,
        task_time_limit=150,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
        beat_schedule={
            "sweep": {
                "task": SWEEP_TASK,
                "schedule": settings.sweep_interval_s,
                "options": {"queue": "interactive", "expires": settings.sweep_interval_s},
            },
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_interval_s,
                "options": {"queue": "interactive", "expires": settings.reconcile_interval_s},
            },
            "take-over-dead-runners": {
                "task": LIVENESS_TASK,
                "schedule": settings.liveness_interval_s,
                "options": {"queue": "interactive", "expires": settings.liveness_interval_s},
            },
            "relay-webhooks": {
                "task": RELAY_WEBHOOKS_TASK,
                "schedule": settings.webhook_relay_interval_s,
                "options": {"queue": "interactive", "expires": settings.webhook_relay_interval_s},
            },
            "billing-pass": {
                "task": BILLING_TASK,
                "schedule": settings.billing_interval_s,
                "options": {"queue": "bulk", "expires": settings.billing_interval_s},
            },
            "refresh-regulations": {
                "task": REGULATIONS_TASK,
                "schedule": settings.twilio_regulations_interval_s,
                "options": {"queue": "bulk", "expires": settings.twilio_regulations_interval_s},
            },
            "purge-idempotency-keys": {
                "task": PURGE_TASK,
                "schedule": 3600.0,
                "options": {"queue": "bulk", "expires": 3600},
            },
        },
    )
    return app


class CeleryPublisher:
    """Publishes provisioning tasks by name, so the API never imports the task code.

    Sends what `app.send_task(PROVISION_TASK, args=[contact_id], queue=queue)` sends: the
    message is built by Celery (`amqp.create_task_message`, with send_task's arguments) and
    published by kombu (`Producer.publish`, with send_task's options), to the default
    exchange with the queue's name as routing key, as Celery does for a direct-exchange queue.
    What is left out is send_task's per-call routing and option lookups, and its publish
    signals (nothing here listens to them); with them, send_task cost several times the CPU
    of the Redis LPUSH. Producers are kept for reuse (one per concurrent caller, each on its
    own broker connection holding one Redis client) rather than taken from Celery's pool,
    which is limited to `broker_pool_limit` and whose kombu channel makes a new redis-py
    client per message. `declare=[]`: publishing to the default exchange needs no binding
    (the workers declare their queues). Several contacts' tasks go in one kombu producer
    batch: one Redis pipeline.
    """

    def __init__(self, app: Celery) -> None:
        import os
        import threading

        self.app = app
        self._idle: list[object] = []  # kombu Producers not in use
        self._lock = threading.Lock()
        self._getpid = os.getpid
        self._pid = os.getpid()
        conf = app.conf
        self._options = {
            "serializer": conf.task_serializer,
            "compression": conf.task_compression,
            "delivery_mode": conf.task_default_delivery_mode,
            "retry": conf.task_publish_retry,
            "retry_policy": conf.task_publish_retry_policy,
            "declare": [],
        }

    def provision(self, contact_id: str, *, queue: str, first_run: FirstRun | None = None) -> None:
        self.provision_many([contact_id], queue=queue, first_runs=[first_run])

    def provision_many(
        self,
        contact_ids: list[str],
        *,
        queue: str,
        first_runs: Sequence[FirstRun | None] | None = None,
        priorities: Sequence[int] | None = None,
        traces: Sequence[dict[str, str] | None] | None = None,
    ) -> None:
        """One task per contact, sent together: kombu buffers the messages of a producer
        batch and pushes them in one Redis pipeline. On an error none may have been sent.

        `first_runs`: each new contact's `FirstRun` hint (None for none), sent as the
        `first_run` header, so the worker runs a number search before it reads the row.
        `priorities`: each message's priority (kombu's Redis transport keeps one list per
        step, 0 taken first; `worker.domain.batch.queue_priority`), else none (0).
        `traces`: each contact's trace context (worker.tracing.carrier) when they came from
        several requests; else each message continues the current one."""
        # The API request's id travels as a message header, and the task binds it to its log
        # lines. With group commit (PostgreSQL) a batch holds other requests' contacts too:
        # only a lone contact's task is sure to be this request's.
        request_id = get_contextvars().get("request_id") if len(contact_ids) == 1 else None
        headers = [
            {FIRST_RUN_HEADER: hint.header()} if hint is not None else None
            for hint in (first_runs or [None] * len(contact_ids))
        ]
        self._publish(PROVISION_TASK, contact_ids, queue, request_id, headers, priorities, traces)

    def deliver_webhooks(self, event_ids: Sequence[str]) -> None:
        """One `deliver_webhook` task per event, to the webhooks queue: what
        `app.send_task(DELIVER_WEBHOOK_TASK, args=[event_id], queue=WEBHOOK_QUEUE)` sends, at
        a fraction of its CPU (the worker publishes one after every terminal transition)."""
        self._publish(DELIVER_WEBHOOK_TASK, event_ids, WEBHOOK_QUEUE, None)

    def _publish(
        self,
        task: str,
        ids: Sequence[str],
        queue: str,
        request_id: str | None,
        headers: Sequence[dict[str, Any] | None] | None = None,
        priorities: Sequence[int] | None = None,
        traces: Sequence[dict[str, str] | None] | None = None,
    ) -> None:
        """One `task` per id (its only argument), with its extra `headers` and its priority
        if any; several go in one producer batch."""
        extra = headers or [None] * len(ids)
        ranks: Sequence[int | None] = priorities or [None] * len(ids)
        parents = traces or [None] * len(ids)
        pid = self._getpid()
        with self._lock:
            if pid != self._pid:  # a forked child: the parent's connections are not ours
                self._idle, self._pid = [], pid
            producer = self._idle.pop() if self._idle else None
        if producer is None:
            # Connects on first use, under the publish retry policy.
            producer = self.app.amqp.Producer(self.app.connection_for_write())
        try:
            if len(ids) == 1:
                self._send(
                    producer, task, ids[0], queue, request_id, extra[0], ranks[0], parents[0]
                )
            else:
                with producer.batch():
                    for one, more, rank, parent in zip(ids, extra, ranks, parents, strict=True):
                        self._send(producer, task, one, queue, None, more, rank, parent)
        except BaseException:
            producer.connection.release()  # possibly broken: the next caller makes a new one
            raise
        _reuse_redis_client(producer.channel)
        with self._lock:
            if self._pid == pid:
                self._idle.append(producer)

    def _send(  # type: ignore[no-untyped-def]
        self,
        producer,
        task: str,
        arg: str,
        queue: str,
        request_id: str | None,
        extra: dict[str, Any] | None,
        priority: int | None = None,
        parent: dict[str, str] | None = None,
    ) -> None:
        from kombu.utils.uuid import uuid

        headers, properties, body, _ = self.app.amqp.create_task_message(
            uuid(),
            task,
            [arg],
            {},
            reply_to=self.app.thread_oid,
            ignore_result=None,
        )
        if request_id:
            headers["request_id"] = request_id
        if extra:
            headers.update(extra)
        if priority:
            properties["priority"] = priority
        # Celery's publish signals (and so its instrumentation) are skipped here: the producer
        # span and the W3C `traceparent` header are ours; the task's span continues from it.
        with tracing.producing(task, arg, headers, parent):
            producer.publish(
                body, exchange="", routing_key=queue, headers=headers, **self._options, **properties
            )


def _reuse_redis_client(channel):  # type: ignore[no-untyped-def]
    """Make kombu's Redis channel hand out one client instead of a new one per message.

    A redis-py client may be shared between threads (see `share_ack_client`). A channel made
    anew after a reconnect is given its own client the first time it is used here.
    """
    create_client = getattr(channel, "_create_client", None)
    if create_client is None or getattr(channel, "_reused_client", None) is not None:
        return
    from contextlib import contextmanager

    client = channel._reused_client = create_client()

    @contextmanager
    def conn_or_acquire(given=None):  # type: ignore[no-untyped-def]
        yield given or client

    channel.conn_or_acquire = conn_or_acquire


def share_ack_client(app: Celery) -> None:
    """In a worker: acknowledge messages through one Redis client per consumer channel.

    kombu's Redis transport makes a new redis-py client (sharing the channel's connection
    pool) for every ack, because the channel's own client belongs to the event loop; with late
    acks that is one client construction per task. A redis-py client is safe to share between
    threads (it takes a pooled connection per command, and every `pipeline()` is a new object),
    so the pool threads' acks share one. The ack itself is unchanged (the same ZREM + HDEL
    pipeline on the same pool); a consumer restarted after a reconnect has a new channel, and
    this step runs again for it.
    """
    from celery import bootsteps

    class ShareAckClient(bootsteps.StartStopStep):
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, c):  # type: ignore[no-untyped-def]
            consumer = getattr(c, "task_consumer", None)
            _reuse_redis_client(getattr(consumer, "channel", None))

    app.steps["consumer"].add(ShareAckClient)
