"""History benchmark: whether the periodic passes and the reads stay as fast after a million
terminal contacts as on an empty database, with EXPLAIN showing an index on every path; and
the retention job on that million.

    .venv/bin/python bench/history.py                   # 1,000,000 contacts (make bench-history)
    .venv/bin/python bench/history.py --contacts 100000 --explain-all

Two databases on `--database-url`, migrated and seeded alike (one account with an API key,
1,000 assistants); the second gets `--contacts` terminal contacts and everything they leave
behind (bench/history_fill.py: generate_series, not the API). Then both get the same open
work: a batch of 1,000 pending contacts, 50 undispatched events and 50 due deliveries. On
each, every path below runs `--repeat` times (median ms printed), the writing ones in a
transaction rolled back so that each run sees the same rows:

- reconcile: the reconciler's claim (worker/store/recovery.py `due_for_reconcile`);
- relay: the webhook relay's pass (worker/store/webhooks.py `due_for_relay`);
- billing pass and retention pass (housekeeping: worker/app/lifecycle.py, the store of
  worker/app/retention.py) and the idempotency-key purge;
- contact list: an assistant's contacts (ContactService.list, 100 a page);
- batch page: the batch's first 1,000 contacts (BatchService.contacts_of), its counts;
- credits: GET /v0/credits (ContactService.credits) and the ledger's first page.

Before the measurements the retention job runs for real on the full database (attempts
older than 30 days: most of the million's), timed, with the ledger counted before and after:
the passes are then measured in the steady state that the hourly job keeps. Every statement
a path sent is EXPLAINed (ANALYZE, BUFFERS) on both databases; a sequential scan of a big
table is flagged. Redis is not used. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from history_fill import fill
from measure import table
from stack import OUT, ROOT, Databases, seed

BIG = (
    "contacts",
    "contact_steps",
    "credit_ledger",
    "events",
    "webhook_deliveries",
    "webhook_attempts",
    "idempotency_keys",
    "assistants",
)


class NullPublisher:
    def provision(self, contact_id: str, *, queue: str) -> None:
        return None

    def provision_many(self, contact_ids: Any, *, queue: str, **_: Any) -> None:
        return None


class Recorder:
    """The statements an engine sends while `on` (their SQL and parameters)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.on = False
        self.seen: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.on and not executemany:
            self.seen.append((statement, parameters))


def open_work(services: Any, seeded: Any, db: Any) -> dict[str, Any]:
    """The same open work in either database: a batch of 1,000 pending contacts accepted ten
    minutes ago and never leased (so the reconciler claims 500 of them), 50 events never
    dispatched, 50 pending deliveries due."""
    from sqlalchemy import text

    items = [
        {"assistant_id": a, "contact_type": "phone", "phone_country": "US"}
        for a in seeded.assistant_ids[:1000]
    ]
    reply = services.batches.submit(
        seeded.account_id, json.dumps({"items": items}).encode(), path="/v0/contact/batch"
    )
    if reply.status not in (200, 202):
        raise RuntimeError(f"batch answered {reply.status}: {str(reply.body)[:300]}")
    batch_id = reply.body["info"]["batch_id"]
    with db.write() as session:
        # Accepted ten minutes ago and never leased: the reconciler's to claim, in either
        # database, however long the other one took to fill.
        session.execute(
            text(
                "UPDATE contacts SET created_at = now() - interval '10 minutes' WHERE batch_id = :b"
            ),
            {"b": batch_id},
        )
        ids = [
            r[0]
            for r in session.execute(
                text("SELECT id FROM contacts WHERE batch_id = :b ORDER BY id LIMIT 100"),
                {"b": batch_id},
            )
        ]
        for i, cid in enumerate(ids):
            session.execute(
                text(
                    "INSERT INTO events (id, account_id, contact_id, type, payload, created_at, "
                    "dispatched_at) VALUES (:id, :a, :c, 'contact.active', '{}', "
                    "now() - interval '10 minutes', CASE WHEN :i >= 50 THEN now() END)"
                ),
                {"id": f"ev_open{i:04d}", "a": seeded.account_id, "c": cid, "i": i},
            )
            if i >= 50:
                session.execute(
                    text(
                        "INSERT INTO webhook_deliveries (id, event_id, account_id, "
                        "contact_id, type, status, attempts, next_attempt_at, created_at, "
                        "updated_at) VALUES "
                        "(:id, :e, :a, :c, 'contact.active', 'pending', 1, "
                        "now() - interval '1 minute', now(), now())"
                    ),
                    {
                        "id": f"wd_open{i:04d}",
                        "e": f"ev_open{i:04d}",
                        "a": seeded.account_id,
                        "c": cid,
                    },
                )
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return {"batch_id": batch_id, "assistant": seeded.assistant_ids[0]}


def paths(services: Any, settings: Any, account_id: int, work: dict[str, Any]) -> dict[str, Any]:
    """name -> (function of a Session, or None for a service call that makes its own)."""
    from worker.store import credits as credit_store
    from worker.store import idempotency, recovery, retention, webhooks

    now = lambda: datetime.now(UTC)  # noqa: E731
    cutoff = lambda: now() - timedelta(days=30)  # noqa: E731
    c, b = services.contacts, services.batches
    return {
        "reconcile (claim 500 due)": (
            lambda s: recovery.due_for_reconcile(s, now(), 60.0, settings.reconcile_batch),
            True,
        ),
        "webhook relay pass": (lambda s: webhooks.due_for_relay(s, now(), 30.0, 500), True),
        "billing pass": (lambda s: services.lifecycle.billing_pass(), False),
        "retention pass (steady state)": (
            lambda s: (
                retention.delete_attempts_before(s, cutoff(), 5000),
                retention.delete_expired_keys(s, now(), 5000),
            ),
            True,
        ),
        "idempotency purge": (lambda s: idempotency.purge_expired(s, now()), True),
        "contact list (100)": (lambda s: c.list(account_id, work["assistant"], 100, None), False),
        "batch page (1,000)": (
            lambda s: b.contacts_of(account_id, work["batch_id"], 1000, None),
            False,
        ),
        "batch counts": (lambda s: b.get(account_id, work["batch_id"]), False),
        "GET /v0/credits": (lambda s: c.credits(account_id), False),
        "ledger page (100)": (lambda s: credit_store.ledger_page(s, account_id, 100, None), True),
    }


def measure(db: Any, todo: dict[str, Any], repeat: int, recorder: Recorder | None) -> dict:
    from sqlalchemy.orm import Session

    out: dict[str, Any] = {}
    for name, (fn, rollback) in todo.items():
        times = []
        for i in range(repeat + 1):  # the first run warms caches; not counted
            if recorder is not None:
                recorder.on = i == 1
            started = time.perf_counter()
            if rollback:
                with Session(db.engine) as session:
                    fn(session)
                    session.rollback()
            else:
                fn(None)
            if i:
                times.append(1000 * (time.perf_counter() - started))
            if recorder is not None:
                recorder.on = False
        out[name] = {"times_ms": times}
        if recorder is not None:
            out[name]["statements"] = list(recorder.seen)
            recorder.seen.clear()
    return out


def explain(db: Any, statement: str, parameters: Any) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement, in a transaction rolled back."""
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        lines = [r[0] for r in cur.fetchall()]
        raw.rollback()
        return lines
    finally:
        raw.close()


def scans(plan: list[str]) -> list[str]:
    found = []
    for line in plan:
        text = line.strip().lstrip("-> ").strip()
        if text.startswith(("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Index Scan")):
            found.append(text.split("  (")[0])
    return found


def prepare(dbs: Databases, label: str, contacts: int, say: Callable[[str], None]) -> Any:
    from worker.app.services import Services
    from worker.settings import Settings
    from worker.store.db import Database

    seeded = seed(dbs, label, 1000)
    filled = {}
    if contacts:
        started = time.monotonic()
        filled = fill(seeded.url, contacts, say)
        say(f"  {label}: {contacts:,} terminal contacts in {time.monotonic() - started:.0f} s")
    settings = Settings(database_url=seeded.url, redis_url="redis://127.0.0.1:6379/15")
    db = Database(seeded.url, pool_size=4)
    services = Services.build(settings, NullPublisher(), db)
    work = open_work(services, seeded, db)
    return seeded, settings, db, services, work, filled


def sizes(db: Any) -> dict[str, int]:
    from sqlalchemy import text

    with db.read() as s:
        return {t: int(s.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in BIG}


def retention_run(bundle: Any) -> str:
    """The retention job for real (most of the history's attempts are past 30 days), timed,
    with the ledger counted before and after; then VACUUM ANALYZE, as autovacuum would."""
    from sqlalchemy import text

    from worker.app.retention import RetentionService

    db, settings = bundle[2], bundle[1]
    with db.read() as s:
        ledger0 = s.execute(text("SELECT count(*) FROM credit_ledger")).scalar_one()
    started = time.monotonic()
    purged = RetentionService(db, settings).run()
    took = time.monotonic() - started
    again = time.monotonic()
    RetentionService(db, settings).run()
    took_again = time.monotonic() - again
    with db.read() as s:
        ledger1 = s.execute(text("SELECT count(*) FROM credit_ledger")).scalar_one()
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return (
        f"retention job: {purged.as_dict()} in {took:.1f} s "
        f"({purged.webhook_attempts / max(took, 1e-9):,.0f} attempts/s, "
        f"{settings.retention_chunk} rows per transaction); the next pass "
        f"{1000 * took_again:.1f} ms; ledger rows {ledger0:,} before, {ledger1:,} after"
    )


def plans_of(bundles: dict[str, Any], statements: dict[str, list], full_all: bool) -> tuple:
    """Each distinct statement of a path once (with how many times it ran), EXPLAINed on
    both databases: the full one's scans (or whole plan) and both execution times."""
    lines: list[str] = []
    seq: set[str] = set()
    distinct: dict[str, tuple[Any, int]] = {}
    for sql, params in statements["full"]:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            first, n = distinct.get(sql, (params, 0))
            distinct[sql] = (first, n + 1)
    empty_params = {sql: params for sql, params in statements["empty"]}
    for sql, (params, n) in distinct.items():
        plan = explain(bundles["full"][2], sql, params)
        found = scans(plan)
        seq |= {
            x for x in found if x.startswith("Seq Scan") and x.split(" on ")[-1].split()[0] in BIG
        }
        timing = next(p for p in plan if "Execution Time" in p).split(":")[1].strip()
        if sql in empty_params:
            e_plan = explain(bundles["empty"][2], sql, empty_params[sql])
            e_time = next(p for p in e_plan if "Execution Time" in p).split(":")[1].strip()
            timing = f"{e_time} empty, {timing} full"
        lines.append(f"  {' '.join(sql.split())[:150]}")
        lines.append(f"    x{n}; execution {timing}")
        lines += [f"    {p}" for p in (plan if full_all else found)]
    return lines, seq


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--explain-all", action="store_true", help="print every plan in full")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    say = lambda m: print(m, flush=True)  # noqa: E731
    dbs = Databases(args.database_url)
    lines: list[str] = []
    try:
        bundles = {"empty": prepare(dbs, "empty", 0, say)}
        bundles["full"] = prepare(dbs, "history", args.contacts, say)
        full = bundles["full"]
        rows = sizes(full[2])
        lines.append("full database: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()))
        if full[5]:
            lines.append("fill: " + ", ".join(f"{k} {v:.0f} s" for k, v in full[5].items()))
        lines.append(retention_run(full))
        recorders = {key: Recorder(b[2].engine) for key, b in bundles.items()}
        times: dict[str, dict[str, list[float]]] = {}
        statements: dict[str, dict[str, list]] = {}
        for rnd in range(2):  # alternate, so both see the same machine
            for key in ("empty", "full") if rnd == 0 else ("full", "empty"):
                seeded, settings, db, services, work, _ = bundles[key]
                todo = paths(services, settings, seeded.account_id, work)
                got = measure(db, todo, args.repeat, recorders[key] if rnd == 0 else None)
                for name, fig in got.items():
                    times.setdefault(name, {}).setdefault(key, []).extend(fig["times_ms"])
                    if "statements" in fig:
                        statements.setdefault(name, {})[key] = fig["statements"]
        table_rows = [("path", "empty ms", f"{args.contacts:,} ms", "ratio", "target", "seq scans")]
        plans: list[str] = []
        for name, by in times.items():
            e, f = statistics.median(by["empty"]), statistics.median(by["full"])
            found, seq = plans_of(bundles, statements[name], args.explain_all)
            plans += [f"\n{name}:", *found]
            row = (name, f"{e:.2f}", f"{f:.2f}", f"{f / e:.2f}", "<= 1.5")
            table_rows.append((*row, ", ".join(sorted(seq)) or "none"))
        lines += [
            "",
            f"history bench: {args.contacts:,} terminal contacts; median of "
            f"2 x {args.repeat} runs, empty and full alternating",
            table(table_rows),
            "",
            "plans (EXPLAIN ANALYZE; scans on the full database; --explain-all: whole plans):",
            *plans,
        ]
        print("\n".join(lines))
        path = OUT / f"history-{stamp}.txt"
        path.write_text(" ".join(sys.argv) + "\n" + "\n".join(lines) + "\n")
        print(f"\nsaved {path.relative_to(ROOT)}")
        for bundle in bundles.values():
            bundle[2].dispose()
        return 0
    finally:
        if not args.keep_db:
            dbs.drop_all()


if __name__ == "__main__":
    sys.exit(main())
