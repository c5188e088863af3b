"""throughput.py --sql-sample: the pipeline in the bench's own process, without Celery.

`sql_sample` runs `Pipeline.run` over n contacts, one at a time, against a sandbox without
latency, and counts what it asks of the database per job (statements by verb, commits, pool
checkouts, pre-pings), with its provider calls and CPU and wall ms per job; with `--profile`,
py-spy records this thread meanwhile (`profile-<stamp>-inprocess.txt`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from collections import Counter
from typing import Any

from measure import record_profile
from stack import OUT, Databases, Sandbox, inventory_for, stop_process
from worker_run import prepare


def sql_sample(
    args: argparse.Namespace,
    dbs: Databases,
    sandbox: Sandbox,
    n: int,
    countries: list[str],
    stamp: str,
) -> dict[str, float]:
    """Runs the pipeline itself (no Celery) over n contacts in this process, one at a time,
    against a sandbox without latency, counting what it asks of the database."""
    from sqlalchemy import event

    from worker.logging import configure
    from worker.providers import Providers
    from worker.runtime.pipeline import Pipeline
    from worker.settings import Settings
    from worker.store.db import Database

    print(f"[sql] in-process pipeline over {n} contacts, one at a time, no latency", flush=True)
    prepared = prepare(dbs, "sql", n, countries, args.redis_url)
    sandbox.ready(inventory_for(n, countries), 0, countries)
    configure("json", "WARNING")
    settings = Settings(
        database_url=prepared.url,
        redis_url=args.redis_url,
        sandbox_url=sandbox.url,
        twilio_auth_token="x",
        google_access_token="x",
    )
    db = Database(prepared.url, pool_size=4)
    counts: Counter[str] = Counter()

    @event.listens_for(db.engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        counts["statements"] += 1
        counts[statement.split(None, 1)[0].upper()] += 1

    @event.listens_for(db.engine, "commit")
    def _commit(conn: Any) -> None:
        counts["commits"] += 1

    @event.listens_for(db.engine.pool, "checkout")
    def _checkout(*_: Any) -> None:
        counts["checkouts"] += 1

    dialect = db.engine.dialect
    real_ping = dialect.do_ping

    def counting_ping(dbapi_connection: Any) -> bool:
        counts["pre_pings"] += 1
        return bool(real_ping(dbapi_connection))

    dialect.do_ping = counting_ping  # type: ignore[method-assign]
    pipeline = Pipeline(db, Providers.from_settings(settings), settings)
    outcomes: Counter[str] = Counter()
    # Warm up on the first tenth (imports, statement caches), measure the rest.
    warm = max(1, n // 10)
    for cid in prepared.contact_ids[:warm]:
        outcomes[pipeline.run(cid, f"bench:{cid}").state] += 1
    counts.clear()
    spy = None
    if args.profile:
        # This thread only, while it holds the GIL: the pipeline's own CPU, without Celery.
        raw = OUT / f"profile-{stamp}-inprocess.txt"
        spy = record_profile(
            os.getpid(), raw, args.profile_rate, "--nonblocking", "--gil", stderr=subprocess.DEVNULL
        )
        time.sleep(1.0)  # let it attach
    stats0 = sandbox.control.stats()["requests"]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for cid in prepared.contact_ids[warm:]:
        outcomes[pipeline.run(cid, f"bench:{cid}").state] += 1
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    if spy is not None:
        stop_process(spy, signal.SIGINT, 60)
    measured = n - warm
    requests = sandbox.control.stats()["requests"] - stats0
    pipeline.providers.close()
    db.dispose()
    if not args.keep_db:
        dbs.drop(prepared.name)
    out = {k: v / measured for k, v in sorted(counts.items())}
    out["provider_calls"] = requests / measured
    out["cpu_ms"] = 1000 * cpu / measured
    out["wall_ms"] = 1000 * wall / measured
    print(
        f"  outcomes: {dict(outcomes)}; per job: "
        + ", ".join(f"{k} {v:.2f}" for k, v in out.items())
    )
    return out
