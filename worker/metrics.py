"""Every Prometheus metric of the service, defined once, and the small hooks that feed them.

The API serves them at `GET /metrics` (api_stub/metrics.py); a worker serves its own on
`PROVISIONER_WORKER_METRICS_PORT` (started by `serve_worker_metrics` from Celery's
`worker_init`). Both use the process's default registry: with the threads pool (the worker's
default) the tasks run in the worker's main process, so one registry per process holds all.
Labels are low-cardinality by construction: route templates, not paths; no ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import structlog
from prometheus_client import (
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)
# No `*_created` series beside each counter: they double the output and nobody graphs them.
disable_created_metrics()

HTTP_REQUESTS = Counter(
    "provisioner_http_requests",
    "HTTP requests answered by the API, by route template, method and status.",
    ["route", "method", "status"],
)
CONTACTS = Counter(
    "provisioner_contacts",
    "Contacts that reached a terminal status, by type and outcome (active, failed).",
    ["type", "outcome"],
)
STEP_DURATION = Histogram(
    "provisioner_step_duration_seconds",
    "Wall time of one attempt of a provider step, whatever its result.",
    ["type", "step"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PROVIDER_CALLS = Counter(
    "provisioner_provider_calls",
    "HTTP calls to providers, by provider and HTTP status (or `timeout`, `error`).",
    ["provider", "status"],
)
WEBHOOK_ATTEMPTS = Counter(
    "provisioner_webhook_attempts",
    "Webhook delivery attempts, by outcome (succeeded, http_error, timeout, connection_error,"
    " refused_address).",
    ["outcome"],
)
HTTP_DURATION = Histogram(
    "provisioner_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template, method and "
    "status class (2xx, 4xx, 5xx). Long polls and event streams last as long as they wait.",
    ["route", "method", "status_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SWEEP_RELEASED = Counter(
    "provisioner_sweep_released",
    "Resources the sweep found on a finished contact that it should not hold, and released"
    " (numbers, senders, users): each left by a runner frozen past its lease.",
    ["resource"],
)
QUEUE_DEPTH = "provisioner_queue_depth"
CONTACTS_STUCK = "provisioner_contacts_stuck"
OLDEST_PENDING_AGE = "provisioner_oldest_pending_contact_age_seconds"
WEBHOOK_BACKLOG = "provisioner_webhook_backlog"
WORKERS_LIVE = "provisioner_workers_live"
BEAT_LAST_TICK = "provisioner_beat_last_tick_timestamp_seconds"
REGULATIONS_OLDEST_AGE = "provisioner_regulations_oldest_age_seconds"
# Where beat records its last tick (a Unix time), for the API's scrape to read.
BEAT_TICK_KEY = "provisioner:beat:last_tick"
# The figures read from the database at scrape time: the key of worker.app.gauges'
# read_figures, and the family it feeds with its help.
FIGURES = {
    "oldest_pending_age_s": (
        OLDEST_PENDING_AGE,
        "Seconds the contact waiting longest for a runner has been pending (0: none waits).",
    ),
    "webhook_backlog": (
        WEBHOOK_BACKLOG,
        "Webhook deliveries due and not yet delivered (counted up to 10,000).",
    ),
    "live_workers": (
        WORKERS_LIVE,
        "Worker processes whose heartbeat is younger than PROVISIONER_WORKER_DEAD_AFTER_S.",
    ),
    "regulations_oldest_age_s": (
        REGULATIONS_OLDEST_AGE,
        "Seconds since the least recently fetched cached Twilio Regulations entry was fetched "
        "(0: none cached). Past PROVISIONER_TWILIO_REGULATIONS_MAX_AGE_S the refresh is failing"
        " and the built-in table judges.",
    ),
}
PROVIDER_CREDENTIALS_OK = "provisioner_provider_credentials_ok"


@contextmanager
def step_timer(contact_type: str, step: str) -> Iterator[None]:
    """Observe the duration of one step attempt (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STEP_DURATION.labels(contact_type, step).observe(time.perf_counter() - start)


def contact_outcome(contact_type: str, outcome: str) -> None:
    CONTACTS.labels(contact_type, outcome).inc()


def provider_call(provider: str, status: int | str) -> None:
    PROVIDER_CALLS.labels(provider, str(status)).inc()


def sweep_released(resource: str, count: int) -> None:
    SWEEP_RELEASED.labels(resource).inc(count)


def webhook_attempt(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold one Celery queue's messages.

    Kombu's Redis transport keeps a queue's messages without a priority in the list named
    after it, and those with one in a list per priority step, `<queue>\\x06\\x16<step>` (steps
    3, 6, 9; kombu's `PRIORITY_STEPS`). Seen with `redis-cli keys '*'` after publishing to both
    queues with and without a priority: `interactive`, `bulk\\x06\\x163`, and the
    `_kombu.binding.*` sets. Messages a worker has taken (and countdown retries it holds) are
    in the `unacked` hash, not counted here: this is what waits for a worker.
    """
    return [queue] + [f"{queue}\x06\x16{n}" for n in (3, 6, 9)]


class QueueDepthCollector(Collector):
    """`provisioner_queue_depth{queue}`: messages waiting in each queue, read from Redis at
    scrape time (LLEN of the queue's lists, summed). A failed read leaves the family empty
    rather than failing the scrape."""

    def __init__(self, redis_client: object, queues: Iterable[str]) -> None:
        self._redis = redis_client
        self._queues = tuple(queues)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            QUEUE_DEPTH,
            "Messages waiting in each Celery queue (Redis list lengths).",
            labels=["queue"],
        )
        try:
            pipe = self._redis.pipeline(transaction=False)  # type: ignore[attr-defined]
            for queue in self._queues:
                for key in queue_keys(queue):
                    pipe.llen(key)
            lengths = iter(pipe.execute())
            depths = {q: sum(next(lengths) for _ in queue_keys(q)) for q in self._queues}
        except Exception as exc:  # Redis down: the rest of the scrape still answers
            log.warning("queue_depth_unavailable", error=type(exc).__name__)
            depths = {}
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family


class StuckContactsCollector(Collector):
    """`provisioner_contacts_stuck{reason}`: contacts whose clean-up (compensation or release)
    met a permanent error,
    by its code, read from the database at scrape time by `count` (reason -> contacts). A
    failed read leaves the family empty rather than failing the scrape."""

    def __init__(self, count: Callable[[], dict[str, int]]) -> None:
        self._count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            CONTACTS_STUCK,
            "Contacts whose clean-up at the providers is stuck on a permanent error, by its "
            "code (retried every PROVISIONER_COMPENSATION_STUCK_RETRY_S; see `provisioner jobs "
            "stuck`).",
            labels=["reason"],
        )
        try:
            counts = self._count()
        except Exception as exc:  # database down: the rest of the scrape still answers
            log.warning("contacts_stuck_unavailable", error=type(exc).__name__)
            counts = {}
        for reason, count in sorted(counts.items()):
            family.add_metric([reason], count)
        yield family


class FiguresCollector(Collector):
    """The unlabelled gauges of FIGURES, read together from the database at scrape time by
    `read` (worker.app.gauges.read_figures). A failed read leaves them out of the scrape
    (an alert on them then sees no sample, never a false zero)."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            figures = self._read()
        except Exception as exc:  # database down: the rest of the scrape still answers
            log.warning("figures_unavailable", error=type(exc).__name__)
            return
        for key, (name, documentation) in FIGURES.items():
            yield GaugeMetricFamily(name, documentation, value=figures[key])


class BeatTickCollector(Collector):
    """`provisioner_beat_last_tick_timestamp_seconds`: when beat last ran its scheduler loop
    (worker.runtime.beat records it in Redis on every tick). No sample before beat's first
    tick, or while Redis does not answer."""

    def __init__(self, redis_client: object) -> None:
        self._redis = redis_client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            raw = self._redis.get(BEAT_TICK_KEY)  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("beat_tick_unavailable", error=type(exc).__name__)
            return
        if raw is not None:
            yield GaugeMetricFamily(
                BEAT_LAST_TICK,
                "Unix time of beat's last scheduler tick (beat ticks at least every few seconds).",
                value=float(raw),
            )


def record_beat_tick(redis_client: object, now: float) -> None:
    """Beat's side of BeatTickCollector: the time of this tick."""
    redis_client.set(BEAT_TICK_KEY, repr(now))  # type: ignore[attr-defined]


def status_class(status: int) -> str:
    """`200` -> `2xx`: the latency histogram's label (a status per series would multiply it)."""
    return f"{status // 100}xx"


class ProviderCredentialsCollector(Collector):
    """`provisioner_provider_credentials_ok{provider}`: 1 when the provider accepted the
    configured credentials at its last answer, 0 when it refused them (/readyz's cached check,
    worker.app.readiness); no series for a provider that has not judged them yet."""

    def __init__(self, verdicts: Callable[[], dict[str, bool]]) -> None:
        self._verdicts = verdicts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            PROVIDER_CREDENTIALS_OK,
            "1 if the provider accepted the configured credentials at its last answer, 0 if "
            "it refused them (checked every PROVISIONER_PROVIDER_CHECK_INTERVAL_S).",
            labels=["provider"],
        )
        for provider, ok in sorted(self._verdicts().items()):
            family.add_metric([provider], 1 if ok else 0)
        yield family


class Registries:
    """The process's default registry plus collectors of one app (the queue depth), read as
    one: each app brings its own Redis client without registering globally twice."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[object]:
        yield from REGISTRY.collect()
        for collector in self._collectors:
            yield from collector.collect()


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped
    """Serve the process's metrics on `port` (a daemon thread); 0 disables it."""
    if port:
        start_http_server(port, addr=host)
        log.info("worker_metrics_listening", port=port)


__all__ = [
    "CONTACTS",
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "PROVIDER_CALLS",
    "STEP_DURATION",
    "WEBHOOK_ATTEMPTS",
    "BeatTickCollector",
    "FiguresCollector",
    "ProviderCredentialsCollector",
    "QueueDepthCollector",
    "Registries",
    "StuckContactsCollector",
    "contact_outcome",
    "provider_call",
    "queue_keys",
    "record_beat_tick",
    "serve_worker_metrics",
    "status_class",
    "step_timer",
    "webhook_attempt",
]
