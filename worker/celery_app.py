"""The Celery application, configured for at-least-once delivery of provisioning tasks."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from worker.embedded_redis import celery_broker_url, redis_url
from worker.settings import Settings

PROVISION_TASK = "worker.tasks.provision_contact"
RECONCILE_TASK = "worker.tasks.reconcile"
PURGE_TASK = "worker.tasks.purge_idempotency_keys"
QUEUES = ("interactive", "bulk")


def create_celery(settings: Settings, *, broker_url: str | None = None) -> Celery:
    app = Celery("provisioner")
    broker = celery_broker_url(broker_url or redis_url(settings))
    app.conf.update(
        broker_url=broker,
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
            # Workers drain `interactive` before `bulk` (kombu checks queues in this order).
            "queue_order_strategy": "priority",
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
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_interval_s,
                "options": {"queue": "interactive", "expires": settings.reconcile_interval_s},
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

    `send_task` itself, through producers kept for reuse: one per concurrent caller, each on
    its own broker connection and holding one Redis client. Per call, plain `send_task` takes
    a producer from Celery's pool (limited to `broker_pool_limit`, so callers beyond it
    wait) and kombu's Redis channel makes a new redis-py client for every message, which
    costs more CPU than the LPUSH itself. The message is the same; `declare=[]` skips
    re-declaring the queue per message: a task routed to a direct-exchange queue is pushed
    onto the queue's list without a binding (the workers declare their queues).
    """

    def __init__(self, app: Celery) -> None:
        import threading

        self.app = app
        self._idle: list[object] = []  # kombu Producers not in use
        self._lock = threading.Lock()

    def provision(self, contact_id: str, *, queue: str) -> None:
        with self._lock:
            producer = self._idle.pop() if self._idle else None
        if producer is None:
            # Connects on first use, under send_task's retry policy.
            producer = self.app.amqp.Producer(self.app.connection_for_write())
        try:
            self.app.send_task(
                PROVISION_TASK, args=[contact_id], queue=queue, producer=producer, declare=[]
            )
        except BaseException:
            producer.connection.release()  # possibly broken: the next caller makes a new one
            raise
        _reuse_redis_client(producer.channel)
        with self._lock:
            self._idle.append(producer)


def _reuse_redis_client(channel):  # type: ignore[no-untyped-def]
    """Make kombu's Redis channel hand out one client instead of a new one per message.

    The channel is used by one caller at a time. A channel made anew after a reconnect is
    given its own client the first time it has published.
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
