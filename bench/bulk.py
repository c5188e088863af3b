"""Bulk onboarding benchmark: `provisioner onboard` of an N-row CSV, from its start until every
contact is terminal, against the real API, real workers and the provider sandbox.

For each row count it makes a database of its own (`cp_bench_<random>_bulk<N>`) on the given
PostgreSQL server with one account and N assistants, starts `provisioner api` (rate limit
raised), `--processes` worker processes sharing `--concurrency` threads (queues `interactive,bulk`)
and the sandbox at `--latency-ms`, writes an N-row CSV of phone contacts, and runs
`provisioner onboard` on it. It reports:

- wall time from starting `provisioner onboard` until the database holds N terminal contacts,
  and jobs/s = N / that time (also N / the database's own window, first start to last update);
- provider calls per job and the 429s the sandbox answered;
- the I/O bound (Little's law): concurrency / (calls per job x latency); the CPU bound:
  cores / CPU seconds per job of the workers, PostgreSQL (the bench database's backends and the
  shared processes) and Redis; the ratio of jobs/s to the lower bound (target: at least 0.8);
- the onboarding client's own CPU seconds and peak RSS (its rusage), per row count, to show
  that they do not grow with the file beyond the compact per-row results it keeps.

    .venv/bin/python bench/bulk.py                      # 1,000 and 5,000 rows, C = 64, 50 ms
    .venv/bin/python bench/bulk.py --rows 1000 --processes 2 --concurrency 64

Needs PostgreSQL (`--database-url`; the bench creates and drops its own databases, touching
nothing else) and Redis (`--redis-url`, default db 14, FLUSHED; refused if another client uses
that database). Figures are printed (and saved under bench/out/), never asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from measure import Meter
from stack import (
    OUT,
    ROOT,
    Databases,
    Poller,
    Sandbox,
    claim_redis,
    inventory_for,
    provisioner_cmd,
    seed,
    start_api,
    start_workers,
    stop_process,
    worker_env,
)


def write_csv(path: Path, assistants: list[int], countries: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["assistant_id", "contact_type", "phone_country"])
        for i, assistant in enumerate(assistants):
            writer.writerow([assistant, "phone", countries[i % len(countries)]])


def run(
    args: argparse.Namespace, dbs: Databases, sandbox: Sandbox, redis: Any, rows: int, stamp: str
) -> dict[str, Any]:
    label = f"bulk{rows}"
    print(
        f"[{label}] {rows} rows, concurrency {args.concurrency} over {args.processes} "
        f"worker process(es), latency {args.latency_ms:g} ms",
        flush=True,
    )
    countries = [c.strip().upper() for c in args.countries.split(",")]
    seeded = seed(dbs, label, rows)
    name, url = seeded.name, seeded.url
    redis.flushdb()
    sandbox.ready(inventory_for(rows, countries), args.latency_ms, countries)
    tmp = Path(tempfile.mkdtemp(prefix="cp_bench_bulk_"))
    env = worker_env(url, args.redis_url, sandbox.url, str(tmp))
    env["PROVISIONER_RATE_LIMIT"] = "1000000/second"
    path = tmp / f"{label}.csv"
    write_csv(path, seeded.assistant_ids, countries)
    log = (OUT / f"bulk-{stamp}-{label}.log").open("w")
    procs: list[subprocess.Popen[bytes]] = []
    poller = None
    try:
        api, api_url = start_api(env, log)
        procs.append(api)
        workers = start_workers(
            env,
            log,
            processes=args.processes,
            concurrency=args.concurrency,
            queues="interactive,bulk",
        )
        procs += workers
        time.sleep(3)  # the workers connect to the broker before the clock starts
        poller = Poller(url)
        meter = Meter([w.pid for w in workers], sandbox.proc.pid, name, {poller.backend_pid}, redis)
        client_env = {**env, "PROVISIONER_API_KEY": seeded.api_key}
        out = (OUT / f"bulk-{stamp}-{label}-onboard.txt").open("w")
        started = time.monotonic()
        meter.start()
        client = subprocess.Popen(
            [*provisioner_cmd(), "onboard", str(path), "--api-url", api_url, "--poll", "1"],
            cwd=ROOT,
            env=client_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
        terminal_at = None
        while True:
            time.sleep(0.2)
            if terminal_at is None:
                meter.sample()
                if poller.terminal() >= rows:
                    terminal_at = time.monotonic()
                    meter.stop()
            pid, status, usage = os.wait4(client.pid, os.WNOHANG)
            if pid:
                client.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - started > args.timeout_s:
                raise RuntimeError(f"not finished in {args.timeout_s} s")
        finished = time.monotonic()
        out.close()
        if terminal_at is None:
            terminal_at = finished
            meter.stop()
        counts = dict(poller.counts())
        window = poller.window()
        stats = sandbox.control.stats()
    finally:
        if poller is not None:
            poller.close()
        for proc in reversed(procs):
            stop_process(proc, signal.SIGTERM, 30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.keep_db:
            dbs.drop(name)

    cpu = meter.result()
    wall = terminal_at - started
    jobs_per_s = rows / wall
    calls = int(stats["requests"]) / rows
    io_bound = args.concurrency / (calls * args.latency_ms / 1000)
    cpu_per_job = sum(cpu.get(k) or 0.0 for k in ("worker", "db", "redis")) / rows
    cpu_bound = (os.cpu_count() or 1) / cpu_per_job
    # The 2 cores are shared with the API, the sandbox, the client and other people's work:
    # the CPU bound on the cores those left to the workers, PostgreSQL and Redis.
    seconds = cpu.get("seconds") or 1.0
    others = ((cpu.get("machine_busy") or 0.0) - cpu_per_job * rows) / seconds
    cores_left = (os.cpu_count() or 1) - others
    result = {
        "rows": rows,
        "concurrency": args.concurrency,
        "processes": args.processes,
        "latency_ms": args.latency_ms,
        "statuses": counts,
        "wall_s": wall,
        "client_exit_s": finished - started,
        "jobs_per_s": jobs_per_s,
        "jobs_per_s_db_window": rows / window if window else None,
        "calls_per_job": calls,
        "provider_by_status": stats.get("by_status"),
        # The headline: calls per active contact by `<provider>.<kind>` (sandbox counters).
        "calls_per_active": calls_per_active(stats.get("calls") or {}, counts),
        "io_bound": io_bound,
        "cpu_ms_per_job": {k: 1000 * (cpu.get(k) or 0.0) / rows for k in ("worker", "db", "redis")},
        "cpu_bound": cpu_bound,
        "ratio": jobs_per_s / min(io_bound, cpu_bound),
        "client_exit_code": client.returncode,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
        "client_peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
        "machine_busy_cores": (cpu.get("machine_busy") or 0.0) / seconds,
        "cores_left": cores_left,
        "ratio_on_cores_left": jobs_per_s / min(io_bound, cores_left / cpu_per_job),
        "cpu_s": cpu,
    }
    print(
        "  "
        + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}),
        flush=True,
    )
    return result


def calls_per_active(calls: dict[str, int], statuses: dict[str, int]) -> dict[str, float]:
    """Provider calls per contact that ended active, by kind, and their total."""
    active = statuses.get("active", 0)
    if not active:
        return {}
    per = {kind: round(n / active, 3) for kind, n in sorted(calls.items())}
    return per | {"total": round(sum(calls.values()) / active, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000,5000", help="CSV sizes, comma-separated")
    parser.add_argument("--concurrency", type=int, default=64, help="worker threads in all")
    parser.add_argument("--processes", type=int, default=2, help="worker processes sharing them")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--countries", default="US,CA,GB,DE,FR,NL,SE,AU,IE,ES")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="FLUSHED")
    parser.add_argument("--timeout-s", type=float, default=1800)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    redis = claim_redis(args.redis_url)
    if redis is None:
        return 2
    dbs = Databases(args.database_url)
    sandbox = Sandbox(OUT / f"bulk-{stamp}-sandbox.log")
    results = []
    try:
        for rows in (int(n) for n in args.rows.split(",")):
            results.append(run(args, dbs, sandbox, redis, rows, stamp))
    finally:
        sandbox.stop()
        dbs.drop_all()
        redis.flushdb()
    print(
        f"\n{os.cpu_count()} cores; CPU ms/job = workers + PostgreSQL + Redis (sandbox not "
        "counted); ratio = jobs/s (wall) / min(I/O bound, CPU bound)"
    )
    head = (
        "rows",
        "wall s",
        "jobs/s",
        "calls/job",
        "429s",
        "I/O bound",
        "CPU ms/job",
        "CPU bound",
        "ratio",
        "cores left",
        "ratio on cores left",
        "client CPU s",
        "client peak RSS MiB",
    )
    print(" | ".join(head))
    for r in results:
        cpu_ms = sum(r["cpu_ms_per_job"].values())
        print(
            " | ".join(
                str(x)
                for x in (
                    r["rows"],
                    f"{r['wall_s']:.1f}",
                    f"{r['jobs_per_s']:.1f}",
                    f"{r['calls_per_job']:.2f}",
                    (r["provider_by_status"] or {}).get("429", 0),
                    f"{r['io_bound']:.0f}",
                    f"{cpu_ms:.1f}",
                    f"{r['cpu_bound']:.0f}",
                    f"{r['ratio']:.2f}",
                    f"{r['cores_left']:.2f}",
                    f"{r['ratio_on_cores_left']:.2f}",
                    f"{r['client_cpu_s']:.2f}",
                    f"{r['client_peak_rss_mib']:.1f}",
                )
            )
        )
    saved = OUT / f"bulk-{stamp}.json"
    saved.write_text(json.dumps({"command": sys.argv, "runs": results}, indent=2))
    print(f"saved {saved.relative_to(ROOT)}")
    return 0 if all(set(r["statuses"]) <= {"active"} for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
