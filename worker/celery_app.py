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
    """Publishes provisioning tasks by name, so the API never imports the task code."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def provision(self, contact_id: str, *, queue: str) -> None:
        self.app.send_task(PROVISION_TASK, args=[contact_id], queue=queue)
