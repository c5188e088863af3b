"""Worker pipeline benchmark: provisioned phone contacts per second against two bounds.

For each concurrency C it makes a database of its own (`cp_bench_<random>_...`) on the given
PostgreSQL server, migrates it, records N pending phone contacts through `ContactService` (with
a publisher that publishes nothing), publishes all N provisioning tasks to the `interactive`
queue, and only then starts the real worker (`provisioner worker --concurrency C`) against a
provider sandbox whose every request takes `--latency-ms`. It measures:

- jobs/s: N over the time from the first contact leaving `pending` (its `started_at`) to the
  last reaching a terminal status (its `updated_at`), both as the database recorded them;
- calls/job: provider requests the sandbox served (`GET /_sandbox/stats`) over N;
- the I/O bound (Little's law): C / (calls per job x latency);
- CPU seconds per job of the worker process, of PostgreSQL (the backends of the bench
  database, minus the bench's own poller, plus the server's shared processes) and of Redis
  (`INFO cpu`), between the first contact leaving `pending` and the last finishing;
- the CPU bound: cores / (CPU seconds per job); and the ratio jobs/s / min(bounds).

Then, separately: the worker's RSS across a long run (`--rss-jobs`, concurrency 32), an
optional raw ceiling (a Celery threads pool doing the same provider calls with one shared httpx
client and no database), an in-process count of SQL statements, transactions and pool pings
per job, and with `--profile` a py-spy profile of the worker at `--profile-concurrency`.

    .venv/bin/python bench/throughput.py                          # the figures
    .venv/bin/python bench/throughput.py --profile --concurrency 32 --skip-rss

The parts: worker_run.py (one run of the real worker, and its figures), raw_ceiling.py
(--raw), inprocess.py (--sql-sample), throughput_report.py (what is printed); the stack they
run against is started through stack.py and measured through measure.py.

Figures are printed (and saved under bench/out/), never asserted. Nothing outside the bench's
own databases is touched; the Redis database given is flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

from inprocess import sql_sample
from raw_ceiling import raw_worker_main, run_raw
from stack import OUT, ROOT, Databases, Sandbox, claim_redis, py_spy
from throughput_report import report
from worker_run import RunResult, run_worker


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="phone contacts per run")
    parser.add_argument("--concurrency", default="16,32,64", help="comma-separated")
    parser.add_argument(
        "--processes",
        default="1",
        help="worker processes sharing each concurrency, comma-separated (e.g. 1,2: every "
        "concurrency once with one `provisioner worker`, once with two at half of it each)",
    )
    parser.add_argument("--latency-ms", type=float, default=100.0, help="sandbox latency")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL server; the bench creates and drops databases of its own on it",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="FLUSHED")
    parser.add_argument("--countries", default="US", help="phone_country of the contacts")
    parser.add_argument(
        "--queue", default="interactive", help="where the tasks are published (bulk: a batch's)"
    )
    parser.add_argument(
        "--queues",
        default="interactive",
        help="the workers' --queues (interactive,bulk,webhooks: what `provisioner worker` runs)",
    )
    parser.add_argument("--rss-jobs", type=int, default=10_000)
    parser.add_argument("--rss-concurrency", type=int, default=32)
    parser.add_argument("--rss-latency-ms", type=float, default=10.0)
    parser.add_argument(
        "--rss-countries",
        default="US,CA,GB,DE,FR,NL,SE,AU,IE,ES",
        help="spread over countries, so the sandbox's per-country search stays cheap",
    )
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-main", action="store_true", help="only the other parts")
    parser.add_argument("--raw", action="store_true", help="also the raw ceiling per concurrency")
    parser.add_argument("--sql-sample", type=int, default=200, help="0: skip the SQL count")
    parser.add_argument("--profile", action="store_true", help="a separate py-spy'd run")
    parser.add_argument("--profile-concurrency", type=int, default=32)
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument(
        "--profile-all-threads",
        action="store_true",
        help="sample every thread py-spy thinks is not idle (default: only the GIL holder, "
        "py-spy --gil, which is what the worker's CPU is spent on)",
    )
    parser.add_argument("--top", type=int, default=20, help="frames in the profile summary")
    parser.add_argument("--stall-s", type=float, default=60.0, help="give up without progress")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the databases")
    parser.add_argument(
        "--phases",
        action="store_true",
        help="start the workers through bench/phases.py: wall ms per phase of a task "
        "(transactions, provider requests, publishes, our Python between them) and how many "
        "worker threads were busy",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    processes = [int(p) for p in args.processes.split(",") if p.strip()]
    countries = [c.strip().upper() for c in args.countries.split(",") if c.strip()]
    rss_countries = [c.strip().upper() for c in args.rss_countries.split(",") if c.strip()]
    if args.profile and py_spy() is None:
        print("py-spy not found (a dev dependency: install the venv)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    redis = claim_redis(args.redis_url)
    if redis is None:
        return 2
    redis.flushdb()
    dbs = Databases(args.database_url)
    sandbox: Sandbox | None = None
    results: list[RunResult] = []
    raws: list[RunResult] = []
    saved: dict[str, Any] = {"command": sys.argv, "cores": os.cpu_count()}
    try:
        sandbox = Sandbox(OUT / f"sandbox-{stamp}.log")
        print(f"sandbox {sandbox.url} (pid {sandbox.proc.pid}); Redis {args.redis_url} flushed")
        common = {"jobs": args.jobs, "latency_ms": args.latency_ms, "stamp": stamp}
        for p in [] if args.skip_main else processes:
            for c in concurrencies:
                label = f"c{c}" if p == 1 else f"c{c}-{p}p"
                results.append(
                    run_worker(
                        args,
                        dbs,
                        sandbox,
                        redis,
                        label=label,
                        concurrency=c,
                        countries=countries,
                        processes=p,
                        **common,
                    )
                )
        if args.raw:
            for c in concurrencies:
                raws.append(
                    run_raw(args, sandbox, redis, concurrency=c, countries=countries, **common)
                )
        sql = {}
        if args.sql_sample:
            sql = sql_sample(args, dbs, sandbox, args.sql_sample, countries, stamp)
        profiled = None
        if args.profile:
            c = args.profile_concurrency
            profiled = run_worker(
                args,
                dbs,
                sandbox,
                redis,
                label=f"profile-c{c}",
                concurrency=c,
                countries=countries,
                profile=True,
                **common,
            )
        rss_run = None
        if not args.skip_rss:
            c = args.rss_concurrency
            rss_run = run_worker(
                args,
                dbs,
                sandbox,
                redis,
                label=f"rss-c{c}",
                concurrency=c,
                jobs=args.rss_jobs,
                latency_ms=args.rss_latency_ms,
                countries=rss_countries,
                stamp=stamp,
                rss=True,
            )

        text, figures = report(args, stamp, results, raws, profiled, rss_run, sql)
        print("\n".join(text))
        shown = results + raws + ([profiled] if profiled else [])
        everything = shown + ([rss_run] if rss_run else [])
        saved.update(figures)
        saved.update(
            runs=[r.figures() for r in everything],
            sql=sql,
            text="\n".join(text),
        )
        path = OUT / f"throughput-{stamp}.json"
        path.write_text(json.dumps(saved, indent=2, default=str))
        print(f"\nsaved {path.relative_to(ROOT)}")
        return 1 if any(r.failed() for r in everything) else 0
    finally:
        if sandbox is not None:
            sandbox.stop()
        if not args.keep_db:
            dbs.drop_all()
        with contextlib.suppress(Exception):
            redis.flushdb()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_raw-worker":
        raw_worker_main(sys.argv[2:])  # the raw ceiling's worker, as `raw_ceiling.py` runs it
    else:
        sys.exit(main())
