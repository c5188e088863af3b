"""The runs of versus.py, each for ours and for the peer (bench/peer/): an API under wrk's
closed loop and under the open-loop generator, and the workers draining N queued phone jobs.

Ours run through the same code as enqueue.py and throughput.py (`start_api`, `run_wrk`,
`worker_run.run_worker`); the peer's through the same meters (`Meter`, `Poller`, `ServerCpu`),
so both columns of versus.py's table are counted alike.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from enqueue import LUA_ENQUEUE, PHONE_BODY, WrkResult, run_wrk
from measure import Meter, ServerCpu, record_profile
from openloop import OpenLoopResult, open_loop
from stack import (
    OUT,
    ROOT,
    TERMINAL,
    Databases,
    Poller,
    Sandbox,
    Writes,
    free_port,
    inventory_for,
    provisioner_env,
    seed,
    start_api,
    stop_process,
    wait_http,
)
from worker_run import RunResult

BENCH = ROOT / "bench"
PEER_KEY = "peer_bench_key"


@dataclass
class Api:
    """One side's API, its database and the next unused assistant id."""

    side: str
    proc: subprocess.Popen[bytes]
    url: str
    key: str
    next_id: int
    last_id: int
    log: IO[Any]
    meter: ServerCpu = field(init=False)
    db_url: str = ""

    def __post_init__(self) -> None:
        self.meter = ServerCpu(self.proc.pid)

    def take(self, n: int) -> int:
        first = self.next_id
        self.next_id += n
        if self.next_id > self.last_id:
            raise RuntimeError(f"{self.side}: out of assistants (raise --assistants)")
        return first

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT, 15)
        self.log.close()


def peer_env(db_url: str, redis_url: str, sandbox_url: str = "") -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISIONER_", "PEER_"))}
    env.update(PEER_DATABASE_URL=db_url, PEER_REDIS_URL=redis_url, PEER_SANDBOX_URL=sandbox_url)
    env["PYTHONPATH"] = str(BENCH)
    return env


def start_our_api(dbs: Databases, redis_url: str, assistants: int, tmp: str, stamp: str) -> Api:
    seeded = seed(dbs, "ours_api", assistants, assistant_name=None, analyze=True)
    env = provisioner_env(
        seeded.url, redis_url, tmp, rate_limit="1000000/second", log_format="json"
    )
    log = open(OUT / f"versus-{stamp}-ours-api.log", "w")  # noqa: SIM115 - closed in stop()
    proc, url = start_api(env, log)
    ids = seeded.assistant_ids
    return Api("ours", proc, url, seeded.api_key, ids[0], ids[-1], log)


def start_peer_api(
    dbs: Databases, redis_url: str, assistants: int, stamp: str, url: str | None = None
) -> Api:
    """The peer's API on a new database, or (`url`) again on the one it had."""
    from peer.models import create_schema

    if url is None:
        _, url = dbs.create("peer_api")
        create_schema(url, assistants=assistants, api_key=PEER_KEY)
    port = free_port()
    log = open(OUT / f"versus-{stamp}-peer-api.log", "a")  # noqa: SIM115 - closed in stop()
    cmd = [sys.executable, "-m", "uvicorn", "peer.app:app", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(
        cmd, cwd=BENCH, env=peer_env(url, redis_url), stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", proc, "the peer's API", log.name)
    api = Api("peer", proc, base, PEER_KEY, 1, assistants, log)
    api.db_url = url
    return api


def restart_peer_api(api: Api, dbs: Databases, redis_url: str, stamp: str) -> Api:
    """A new peer API process on the same database, carrying on with the next assistant.

    Overloaded (an offered rate above what it accepts), the peer's API does not recover by
    itself: its sync routes' session dependency holds a pooled connection while the request
    waits for a thread-pool slot, so requests queue behind a 30 s pool timeout each
    (FastAPI's documented pattern; tiangolo/fastapi#3205). The next run gets a fresh one."""
    stop_process(api.proc, signal.SIGKILL, 5)
    api.log.close()
    fresh = start_peer_api(dbs, redis_url, api.last_id, stamp, url=api.db_url)
    fresh.next_id = api.next_id
    return fresh


def closed_loop(api: Api, seconds: float, clients: int, scripts: Path, log: Path) -> WrkResult:
    """wrk at `clients` connections on POST contact, a fresh assistant per request."""
    wrk_args = SimpleNamespace(threads=2, clients=clients)
    first = api.take(int(seconds * 1500))  # more than either side accepts in that time
    script_args = [str(first), str(api.last_id), "2", api.key, PHONE_BODY]
    return run_wrk(
        f"{api.side} closed loop",
        api.url + "/v0",
        scripts / "enqueue.lua",
        wrk_args,  # type: ignore[arg-type]
        max(1, round(seconds)),  # wrk takes whole seconds
        script_args,
        api.meter,
        log,
    )


def write_scripts(directory: Path) -> Path:
    (directory / "enqueue.lua").write_text(LUA_ENQUEUE)
    return directory


def fixed_rate(api: Api, rate: float, seconds: float) -> tuple[OpenLoopResult, float, dict]:
    """POSTs at `rate`/s on schedule for `seconds`; the result, the generator's CPU seconds and
    the servers' CPU (% of one core) during it."""
    first = api.take(int(rate * seconds) + 1)
    before = api.meter.snapshot()
    result, cpu = open_loop(
        api.url,
        rate=rate,
        seconds=seconds,
        path_for=lambda i: f"/v0/assistant/{first + i}/contact",
        body=PHONE_BODY.encode(),
        headers={"Authorization": f"Bearer {api.key}"},
    )
    return result, cpu, ServerCpu.delta(before, api.meter.snapshot())


# --- workers ---------------------------------------------------------------------------------


def start_peer_workers(
    env: dict[str, str], log: IO[Any], *, processes: int, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "celery", "-A", "peer.tasks", "worker", "-P", "threads"]
    cmd += ["-c", str(concurrency // processes), "-Q", "peer", "--loglevel", "WARNING"]
    cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return [
        subprocess.Popen(cmd, cwd=BENCH, env=env, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(processes)
    ]


def run_peer_worker(
    args: argparse.Namespace,
    dbs: Databases,
    sandbox: Sandbox,
    redis: Any,
    *,
    label: str,
    concurrency: int,
    processes: int,
    jobs: int,
    latency_ms: float,
    stamp: str,
    profile: bool = False,
) -> RunResult:
    """The peer's workers over `jobs` pending phone contacts, all queued before they start;
    measured as worker_run.run_worker measures ours."""
    from celery import Celery
    from peer.models import create_schema

    print(f"[{label}] peer, concurrency {concurrency} ({processes} processes), {jobs} jobs")
    result = RunResult(label, concurrency, jobs, latency_ms, processes=processes)
    name, url = dbs.create(label)
    create_schema(url, assistants=jobs, api_key=PEER_KEY, pending=jobs)
    redis.flushdb()
    sandbox.ready(inventory_for(jobs, ["US"]), latency_ms, ["US"])
    app = Celery("peer", broker=args.redis_url)
    with app.producer_or_acquire() as producer:
        for i in range(1, jobs + 1):
            app.send_task(
                "peer.provision_contact", args=[f"ct_peer{i}"], queue="peer", producer=producer
            )
    app.close()
    poller = Poller(url)
    xacts0, polls0 = dbs.xacts(name), poller.queries
    writes0 = Writes(url)
    log_path = OUT / f"versus-{stamp}-{label}.log"
    raw = OUT / f"profile-{stamp}-{label}.txt"
    spy = None
    with open(log_path, "w") as log:
        workers = start_peer_workers(
            peer_env(url, args.redis_url, sandbox.url),
            log,
            processes=processes,
            concurrency=concurrency,
        )
    try:
        meter = Meter([w.pid for w in workers], sandbox.proc.pid, name, {poller.backend_pid}, redis)
        deadline = time.monotonic() + 120
        while not any(n for s, n in poller.counts().items() if s != "pending"):
            if any(w.poll() is not None for w in workers) or time.monotonic() > deadline:
                raise RuntimeError(f"the peer's workers did not start; see {log_path}")
            time.sleep(0.02)
        meter.start()
        if profile:
            spy = record_profile(workers[0].pid, raw, args.profile_rate, "--nonblocking", "--gil")
        counts: Counter[str] = Counter()
        last_done, last_progress = -1, time.monotonic()
        while True:
            time.sleep(0.2)
            counts = poller.counts()
            result.db_polls += 1
            for wait, n in poller.waits().items():
                result.db_waits[wait] = result.db_waits.get(wait, 0) + n
            meter.sample()
            done = sum(counts[s] for s in TERMINAL)
            now = time.monotonic()
            if done >= jobs:
                break
            if done != last_done:
                last_done, last_progress = done, now
            if now - last_progress > args.stall_s:
                result.error = f"no progress for {args.stall_s} s at {dict(counts)}"
                break
        meter.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.communicate(timeout=120)
            result.profile = str(raw) if raw.exists() else None
        result.elapsed_s = poller.window() or (meter.result()["seconds"] or 0.0)
        result.statuses = dict(sorted(counts.items()))
        result.cpu = meter.result()
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
    time.sleep(0.5)
    result.xacts_per_job = (dbs.xacts(name) - xacts0 - polls) / jobs
    result.writes = Writes(url).per_job(writes0, jobs)
    dbs.drop(name)
    print("  " + result.line(), flush=True)
    return result
