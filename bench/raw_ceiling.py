"""throughput.py --raw: the raw ceiling, Celery threads + httpx and no database.

A Celery threads pool (the same Celery configuration, from `create_celery`) whose task makes a
phone job's two provider calls (search, buy) with one shared httpx client, and nothing else:
what the worker would do per second if the pipeline's own work cost nothing. `run_raw`
publishes the tasks and starts this file as the worker:

    python bench/raw_ceiling.py --concurrency C --redis-url URL --sandbox-url URL
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from measure import Meter
from stack import CANDIDATES, OUT, ROOT, TWILIO_SID, Sandbox, inventory_for, stop_process
from worker_run import RunResult, publish

RAW_TASK = "bench.raw_provision"
RAW_KEYS = ("bench:raw:first", "bench:raw:last", "bench:raw:done")


def raw_worker_main(argv: list[str]) -> None:
    """The raw worker: a Celery threads pool whose task makes a phone job's two provider calls
    (search, buy) with one shared httpx client, and nothing else."""
    parser = argparse.ArgumentParser(prog="raw_ceiling.py")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--sandbox-url", required=True)
    ns = parser.parse_args(argv)

    import httpx
    import redis as redis_lib

    from worker.runtime.celery_app import create_celery
    from worker.settings import Settings

    app = create_celery(Settings(redis_url=ns.redis_url))
    client = httpx.Client(
        base_url=ns.sandbox_url,
        auth=(TWILIO_SID, "x"),
        timeout=httpx.Timeout(20.0, connect=5.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
    )
    counter = redis_lib.Redis.from_url(ns.redis_url)
    account = f"/2010-04-01/Accounts/{TWILIO_SID}"
    first_seen = threading.Event()

    @app.task(name=RAW_TASK, ignore_result=True)
    def raw_provision(tag: str, country: str) -> None:
        if not first_seen.is_set():
            first_seen.set()
            counter.set(RAW_KEYS[0], time.time(), nx=True)
        found = client.get(
            f"{account}/AvailablePhoneNumbers/{country}/Local.json",
            params={"PageSize": CANDIDATES},
        )
        found.raise_for_status()
        numbers = [n["phone_number"] for n in found.json()["available_phone_numbers"]]
        bought = client.post(
            f"{account}/IncomingPhoneNumbers.json",
            data={"PhoneNumber": numbers[-1], "FriendlyName": tag},
        )
        bought.raise_for_status()
        pipe = counter.pipeline(transaction=False)
        pipe.set(RAW_KEYS[1], time.time())
        pipe.incr(RAW_KEYS[2])
        pipe.execute()

    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={ns.concurrency}",
            "--queues=interactive",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def run_raw(
    args: argparse.Namespace,
    sandbox: Sandbox,
    redis: Any,
    *,
    concurrency: int,
    jobs: int,
    latency_ms: float,
    countries: list[str],
    stamp: str,
) -> RunResult:
    label = f"raw-c{concurrency}"
    print(f"[{label}] raw ceiling: concurrency {concurrency}, {jobs} jobs", flush=True)
    result = RunResult(label, concurrency, jobs, latency_ms)
    redis.flushdb()
    sandbox.ready(inventory_for(jobs, countries), latency_ms, countries)
    took = publish(
        args.redis_url, RAW_TASK, [[f"raw-{i}", countries[i % len(countries)]] for i in range(jobs)]
    )
    print(f"  published {jobs} tasks in {took:.1f} s", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve())]
    cmd += ["--concurrency", str(concurrency), "--redis-url", args.redis_url]
    cmd += ["--sandbox-url", sandbox.url]
    log_path = OUT / f"worker-{stamp}-{label}.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        meter = Meter([worker.pid], sandbox.proc.pid, None, set(), redis)
        deadline = time.monotonic() + 120
        while not redis.exists(RAW_KEYS[0]):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the raw worker did not start; see {log_path}")
            time.sleep(0.02)
        meter.start()
        last_done, last_progress = -1, time.monotonic()
        while True:
            time.sleep(0.2)
            done = int(redis.get(RAW_KEYS[2]) or 0)
            now = time.monotonic()
            if done >= jobs:
                break
            if done != last_done:
                last_done, last_progress = done, now
            if worker.poll() is not None or now - last_progress > args.stall_s:
                result.error = f"raw worker stopped at {done} of {jobs}; see {log_path}"
                break
        meter.stop()
        first, last = (float(redis.get(k) or 0) for k in RAW_KEYS[:2])
        result.elapsed_poll_s = meter.result()["seconds"] or 0.0
        result.elapsed_s = (last - first) if first and last > first else result.elapsed_poll_s
        result.statuses = {"done": int(redis.get(RAW_KEYS[2]) or 0)}
        result.cpu = meter.result()
        stats = sandbox.control.stats()
        result.requests = int(stats["requests"])
        result.by_status = dict(stats.get("by_status") or {})
    finally:
        stop_process(worker, signal.SIGTERM, 30)
    print("  " + result.line(), flush=True)
    return result


if __name__ == "__main__":
    raw_worker_main(sys.argv[1:])
