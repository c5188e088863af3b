"""One run of throughput.py: the real worker over N pending phone contacts.

`run_worker` records N pending contacts in a database of their own (`prepare`), publishes all N
provisioning tasks to `interactive` (`publish`), and only then starts `provisioner worker`
(`--processes` of them sharing the concurrency), measuring from the first contact leaving
`pending` to the last reaching a terminal status. Its figures, and the bounds they are held
against, are a `RunResult`, which the raw ceiling (raw_ceiling.py) fills in too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from measure import Meter, fmt, record_profile, vm_hwm
from stack import (
    OUT,
    TERMINAL,
    Databases,
    Poller,
    Sandbox,
    Writes,
    inventory_for,
    seed,
    start_workers,
    stop_process,
    worker_env,
)


@dataclass
class RunResult:
    label: str
    concurrency: int
    jobs: int
    latency_ms: float
    processes: int = 1
    elapsed_s: float = 0.0
    elapsed_poll_s: float = 0.0
    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # the sandbox's `<provider>.<kind>`
    statuses: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)
    db_shared: dict[str, float] = field(default_factory=dict)
    db_waits: dict[str, int] = field(default_factory=dict)  # summed over the polls
    db_polls: int = 0
    xacts_per_job: float | None = None
    writes: dict[str, Any] | None = None  # stack.Writes.per_job
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (s, done, bytes)
    rss_hwm: int | None = None
    profile: str | None = None
    phases: dict[str, Any] | None = None  # bench/phases.py's summary (--phases)
    error: str | None = None

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def calls_per_job(self) -> float:
        return self.requests / self.jobs if self.jobs else 0.0

    def calls_per_active(self) -> dict[str, float]:
        """Provider calls per contact that ended active, by `<provider>.<kind>` (the sandbox's
        counters: every request that arrived, answered or refused), and their `total`."""
        active = self.statuses.get("active") or self.statuses.get("done") or 0
        if not active:
            return {}
        per = {kind: n / active for kind, n in sorted(self.calls.items())}
        return per | {"total": sum(self.calls.values()) / active}

    @property
    def io_bound(self) -> float:
        per_job = self.calls_per_job * self.latency_ms / 1000
        return self.concurrency / per_job if per_job else float("inf")

    def cpu_ms(self, key: str) -> float | None:
        value = self.cpu.get(key)
        return None if value is None else 1000 * value / self.jobs

    @property
    def cpu_total_ms(self) -> float:
        return sum(self.cpu_ms(k) or 0.0 for k in ("worker", "db", "redis"))

    @property
    def cpu_bound(self) -> float:
        cores = os.cpu_count() or 1
        return cores / (self.cpu_total_ms / 1000) if self.cpu_total_ms else float("inf")

    @property
    def ratio(self) -> float:
        return self.jobs_per_s / min(self.io_bound, self.cpu_bound)

    @property
    def cores_left(self) -> float | None:
        """Cores left to the worker, PostgreSQL and Redis: all of them minus what the sandbox,
        the bench itself and other people's processes used during the run."""
        secs, busy = self.cpu.get("seconds") or 0.0, self.cpu.get("machine_busy")
        if not secs or busy is None:
            return None
        counted = ("worker", "db", "redis", "sandbox", "bench")
        others = busy - sum(self.cpu.get(k) or 0.0 for k in counted)
        taken = others + (self.cpu.get("sandbox") or 0.0) + (self.cpu.get("bench") or 0.0)
        return (os.cpu_count() or 1) - taken / secs

    @property
    def ratio_left(self) -> float | None:
        """jobs/s over min(I/O bound, CPU bound on the cores left)."""
        left = self.cores_left
        if left is None or not self.cpu_total_ms:
            return None
        return self.jobs_per_s / min(self.io_bound, left / (self.cpu_total_ms / 1000))

    def figures(self) -> dict[str, Any]:
        """Its fields and the figures derived from them, as saved in the JSON."""
        return self.__dict__ | {
            "jobs_per_s": self.jobs_per_s,
            "calls_per_job": self.calls_per_job,
            "io_bound": self.io_bound,
            "cpu_total_ms": self.cpu_total_ms,
            "cpu_bound": self.cpu_bound,
            "ratio": self.ratio,
            "cores_left": self.cores_left,
            "ratio_left": self.ratio_left,
        }

    def failed(self) -> bool:
        return bool(self.error or set(self.statuses) - {"active", "done"})

    def line(self) -> str:
        """The run in one line, printed as it ends."""
        return (
            f"{self.label}: {self.jobs_per_s:.1f} jobs/s, {self.calls_per_job:.2f} calls/job, "
            f"I/O bound {self.io_bound:.0f}, CPU {self.cpu_total_ms:.2f} ms/job (worker "
            f"{fmt(self.cpu_ms('worker'))}, db {fmt(self.cpu_ms('db'))}, redis "
            f"{fmt(self.cpu_ms('redis'))}), CPU bound {self.cpu_bound:.0f}, ratio "
            f"{self.ratio:.2f}, statuses {self.statuses}"
            + (f"  ERROR: {self.error}" if self.error else "")
        )


@dataclass
class Prepared:
    name: str
    url: str
    contact_ids: list[str]
    first_runs: list[Any]  # each contact's hint, as the API would publish it


class HeldPublisher:
    """ContactService's publisher for the bench: it keeps what the API would publish (each
    contact's `FirstRun` hint), and `publish_held` sends it later, all at once."""

    def __init__(self) -> None:
        self.first_runs: dict[str, Any] = {}

    def provision(self, contact_id: str, *, queue: str) -> None:
        self.first_runs[contact_id] = None

    def provision_many(self, contact_ids: list[str], *, queue: str, first_runs: Any = None) -> None:
        hints = first_runs or [None] * len(contact_ids)
        for contact_id, hint in zip(contact_ids, hints, strict=True):
            self.first_runs[contact_id] = hint


def prepare(dbs: Databases, label: str, n: int, countries: list[str], redis_url: str) -> Prepared:
    """A migrated database with one account, n assistants and n pending phone contacts."""
    from worker.app.contacts import ContactService
    from worker.settings import Settings
    from worker.store.db import Database

    started = time.monotonic()
    seeded = seed(dbs, label, n)
    db = Database(seeded.url, pool_size=8)
    try:
        settings = Settings(database_url=seeded.url, redis_url=redis_url)
        held = HeldPublisher()
        service = ContactService(db, settings, held)
        path = "/v0/assistant/{}/contact"

        def submit(i: int) -> str:
            body = json.dumps(
                {"contact_type": "phone", "phone_country": countries[i % len(countries)]}
            )
            assistant = seeded.assistant_ids[i]
            reply = service.submit(
                seeded.account_id, assistant, body.encode(), path=path.format(assistant)
            )
            if reply.status != 202:
                raise RuntimeError(f"submit answered {reply.status}: {reply.body}")
            return str(reply.body["info"]["id"])

        with ThreadPoolExecutor(8) as pool:
            contact_ids = list(pool.map(submit, range(n)))
    finally:
        db.dispose()
    print(
        f"  database {seeded.name}: {n} pending phone contacts "
        f"({time.monotonic() - started:.1f} s)",
        flush=True,
    )
    return Prepared(
        seeded.name, seeded.url, contact_ids, [held.first_runs[cid] for cid in contact_ids]
    )


def publish(
    redis_url: str, task: str, arg_lists: list[list[Any]], queue: str = "interactive"
) -> float:
    """Sends one `task` per argument list to `queue`; returns the seconds it took."""
    from worker.runtime.celery_app import create_celery
    from worker.settings import Settings

    app = create_celery(Settings(redis_url=redis_url))
    started = time.monotonic()
    with app.producer_or_acquire() as producer:
        for args in arg_lists:
            app.send_task(task, args=args, queue=queue, producer=producer)
    elapsed = time.monotonic() - started
    app.close()
    return elapsed


def publish_held(redis_url: str, prepared: Prepared, queue: str) -> float:
    """Sends the prepared contacts' tasks as the API sends them (CeleryPublisher, with each
    contact's hint), 100 per producer batch; returns the seconds it took."""
    from worker.runtime.celery_app import CeleryPublisher, create_celery
    from worker.settings import Settings

    app = create_celery(Settings(redis_url=redis_url))
    publisher = CeleryPublisher(app)
    started = time.monotonic()
    ids = prepared.contact_ids
    for at in range(0, len(ids), 100):
        chunk = slice(at, at + 100)
        publisher.provision_many(ids[chunk], queue=queue, first_runs=prepared.first_runs[chunk])
    elapsed = time.monotonic() - started
    app.close()
    return elapsed


def run_worker(
    args: argparse.Namespace,
    dbs: Databases,
    sandbox: Sandbox,
    redis: Any,
    *,
    label: str,
    concurrency: int,
    jobs: int,
    latency_ms: float,
    countries: list[str],
    stamp: str,
    profile: bool = False,
    rss: bool = False,
    processes: int = 1,
) -> RunResult:
    print(
        f"[{label}] concurrency {concurrency} ({processes} worker process(es)), {jobs} jobs, "
        f"latency {latency_ms:g} ms",
        flush=True,
    )
    result = RunResult(label, concurrency, jobs, latency_ms, processes=processes)
    prepared = prepare(dbs, label, jobs, countries, args.redis_url)
    redis.flushdb()
    sandbox.ready(inventory_for(jobs, countries), latency_ms, countries)
    queue = getattr(args, "queue", "interactive")
    took = publish_held(args.redis_url, prepared, queue)
    queued = redis.llen(queue)
    print(f"  published {jobs} tasks in {took:.1f} s; '{queue}' holds {queued}", flush=True)

    poller = Poller(prepared.url)
    xacts0 = dbs.xacts(prepared.name)
    writes0 = Writes(prepared.url)
    polls0 = poller.queries
    tmp = tempfile.mkdtemp(prefix="cp_bench_")
    log_path = OUT / f"worker-{stamp}-{label}.log"
    phases_prefix = OUT / f"phases-{stamp}-{label}"
    spy: subprocess.Popen[str] | None = None
    raw = OUT / f"profile-{stamp}-{label}.txt"
    with open(log_path, "w") as log:
        workers = start_workers(
            worker_env(prepared.url, args.redis_url, sandbox.url, tmp),
            log,
            processes=processes,
            concurrency=concurrency,
            queues=getattr(args, "queues", "interactive"),
            phases=phases_prefix if args.phases else None,
        )
    worker = workers[0]
    try:
        meter = Meter(
            [w.pid for w in workers], sandbox.proc.pid, prepared.name, {poller.backend_pid}, redis
        )
        deadline = time.monotonic() + 120
        while not any(n for s, n in poller.counts().items() if s != "pending"):
            if any(w.poll() is not None for w in workers):
                raise RuntimeError(f"a worker exited; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no contact left pending in 120 s; see {log_path}")
            time.sleep(0.02)
        meter.start()
        if profile:
            gil = [] if args.profile_all_threads else ["--gil"]
            spy = record_profile(worker.pid, raw, args.profile_rate, "--nonblocking", *gil)
        last_done, last_progress, last_rss = -1, time.monotonic(), 0.0
        counts: Counter[str] = Counter()
        while True:
            time.sleep(0.2)
            counts = poller.counts()
            result.db_polls += 1
            for name, n in poller.waits().items():
                result.db_waits[name] = result.db_waits.get(name, 0) + n
            done = sum(counts[s] for s in TERMINAL)
            now = time.monotonic()
            meter.sample()
            if rss and now - last_rss >= 1.0:
                last_rss = now
                with contextlib.suppress(Exception):
                    rss_bytes = meter.worker.memory_info().rss
                    result.rss.append((now - meter.t0, done, rss_bytes))
            if done >= jobs:
                break
            if done != last_done:
                last_done, last_progress = done, now
            if any(w.poll() is not None for w in workers):
                result.error = f"a worker exited; see {log_path}"
                break
            if now - last_progress > args.stall_s:
                result.error = f"no progress for {args.stall_s} s at {dict(counts)}"
                break
        meter.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                _, err = spy.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                spy.kill()
                err = "timed out"
            if not raw.exists():
                print(f"  py-spy wrote no profile: {err.strip()[-500:]}", file=sys.stderr)
            else:
                result.profile = str(raw)
        if rss:
            with contextlib.suppress(Exception):
                result.rss_hwm = vm_hwm(worker.pid)
        result.elapsed_poll_s = meter.result()["seconds"] or 0.0
        result.elapsed_s = poller.window() or result.elapsed_poll_s
        result.statuses = dict(sorted(counts.items()))
        result.cpu = meter.result()
        result.db_shared = meter.pg.shared() if meter.pg else {}
        stats = sandbox.control.stats()
        result.requests = int(stats["requests"])
        result.by_status = dict(stats.get("by_status") or {})
        result.calls = dict(stats.get("calls") or {})
    finally:
        stop_process(spy, signal.SIGINT, 30)
        for w in workers:
            stop_process(w, signal.SIGTERM, 30)
        polls = poller.queries - polls0
        poller.close()
        shutil.rmtree(tmp, ignore_errors=True)
    time.sleep(0.5)  # backends flush their statistics as they exit
    with contextlib.suppress(Exception):
        result.xacts_per_job = (dbs.xacts(prepared.name) - xacts0 - polls) / jobs
    with contextlib.suppress(Exception):
        result.writes = Writes(prepared.url).per_job(writes0, jobs)
    if not args.keep_db:
        dbs.drop(prepared.name)
    print("  " + result.line(), flush=True)
    if args.phases:
        from phases import describe, summarise

        result.phases = summarise(phases_prefix, concurrency // processes)
        if result.phases:
            print(f"  phases: {describe(result.phases)}", flush=True)
    return result
