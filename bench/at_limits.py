"""Bulk work at a provider's own limit: two accounts' batches against Twilio's per-account
concurrency limit, ours beside the peer.

The sandbox refuses a Twilio request that arrives while `--cap` (20) of the account's are in
flight (429, code 20429: `twilio_concurrency_limit`). Each side runs, on the same sandbox,
PostgreSQL server and Redis:

- *together*: a large batch (`--contacts` minus `--small`) queued, the workers started, then,
  `--small-after-s` (2 s) later, a small batch of another account (`--small`, 200);
- *alone*: the small batch by itself, on idle workers (warmed up first by `--warm` contacts).

Ours: two accounts' `POST /v0/contact/batch` (through `worker.app.BatchService`, as the API
runs it), workers with `PROVISIONER_PROVIDER_CONCURRENCY=twilio=<cap>`. The peer: the same
numbers of tasks on its one queue (it has no batches; the small batch is queued after the
large one), `autoretry_for` on 429s. Printed, for each side:

- the cap's utilisation: the sandbox's summed seconds of the account's Twilio requests in
  flight over (cap x wall time) (target >= 0.9), over two windows: from the sampler's start
  (before the workers are started, so their boot counts as idle cap) and from the run's
  first Twilio request (what a long-running deployment's workers see), both to the last
  terminal contact;
- the 20429s met in all, and after the run's first second (target 0);
- the small batch's finish time (its submission to its last terminal contact) beside its time
  alone (target <= 1.5x);
- provider calls per active contact by kind, and the statuses reached.

    .venv/bin/python bench/at_limits.py                     # 2,000 contacts, cap 20, C = 64
    .venv/bin/python bench/at_limits.py --contacts 400 --small 50 --concurrency 32

Needs PostgreSQL (`--database-url`; its own databases, dropped after) and Redis (`--redis-url`,
default db 13, FLUSHED). Figures are printed and saved under bench/out/, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from measure import fmt, idle_ticks, table
from stack import (
    OUT,
    TWILIO_SID,
    Databases,
    Sandbox,
    claim_redis,
    connect,
    inventory_for,
    seed,
    start_workers,
    stop_process,
    worker_env,
)
from versus_runs import PEER_KEY, peer_env, start_peer_workers

TERMINAL = ("active", "failed", "deleted")


@dataclass
class Run:
    label: str
    contacts: int
    wall_s: float = 0.0
    # From the run's first Twilio request (as the sampler saw it, 0.05 s apart) to its end.
    sending_s: float = 0.0
    # The machine's busy cores over that window (every process: workers, PostgreSQL, Redis,
    # the sandbox, the bench): what bounds a run that does not keep the cap full.
    busy_cores: float | None = None
    small_s: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    busy_s: float = 0.0
    refused: int = 0
    refused_after_first_s: int = 0
    peak: int = 0
    error: str | None = None

    def utilisation(self, cap: int, window_s: float | None = None) -> float:
        window_s = self.wall_s if window_s is None else window_s
        return self.busy_s / (cap * window_s) if window_s else 0.0

    def calls_per_active(self) -> dict[str, float]:
        active = self.statuses.get("active", 0)
        if not active:
            return {}
        per = {k: n / active for k, n in sorted(self.calls.items())}
        return per | {"total": sum(self.calls.values()) / active}


class Sampler(threading.Thread):
    """The sandbox's refusals over time: how many came after the run's first second."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(daemon=True)
        self.sandbox, self.samples = sandbox, []
        self.halt = threading.Event()
        self.first_call_at: float | None = None  # monotonic
        self.first_call_ticks: tuple[int, int] | None = None  # /proc/stat (idle, total)

    def start(self) -> None:
        """From now: the sandbox's counters are taken as they stand (`base`), and the run's
        figures are what they gained since."""
        self.base = self.sandbox.control.stats()
        self.started_at = time.monotonic()
        super().start()

    def run(self) -> None:
        base = self.base["faults"].get("concurrency_limited", 0)
        calls = sum(self.base.get("calls", {}).values())
        ticks = 0
        while not self.halt.wait(0.05):
            ticks += 1
            if self.first_call_at is not None and ticks % 5:
                continue  # refusals every 0.25 s; the first call to the nearest 0.05 s
            stats = self.sandbox.control.stats()
            if self.first_call_at is None and sum(stats.get("calls", {}).values()) > calls:
                self.first_call_at = time.monotonic()
                self.first_call_ticks = idle_ticks()
            refused = stats["faults"].get("concurrency_limited", 0)
            self.samples.append((time.monotonic() - self.started_at, refused - base))

    def refused_by(self, seconds: float) -> int:
        return max((n for t, n in self.samples if t <= seconds), default=0)


def counts(url: str, where: str = "") -> Counter[str]:
    with connect(url) as conn:
        rows = conn.execute(f"SELECT status, count(*) FROM contacts {where} GROUP BY status")
        return Counter({status: n for status, n in rows})


def wait_terminal(url: str, total: int, where: str, timeout_s: float, stall_s: float) -> bool:
    """Until `total` contacts (of `where`) are terminal; False on a stall or the timeout."""
    started = last_change = time.monotonic()
    last = -1
    while time.monotonic() - started < timeout_s:
        done = sum(counts(url, where)[s] for s in TERMINAL)
        if done >= total:
            return True
        if done != last:
            last, last_change = done, time.monotonic()
        if time.monotonic() - last_change > stall_s:
            return False
        time.sleep(0.1)
    return False


def finish(run: Run, sandbox: Sandbox, sampler: Sampler, url: str) -> None:
    """The run's figures, over the window from `sampler`'s start (the first Twilio request
    the run could make) to now (its last terminal contact)."""
    sampler.halt.set()
    sampler.join()
    ended = time.monotonic()
    run.wall_s = ended - sampler.started_at
    run.sending_s = ended - (sampler.first_call_at or sampler.started_at)
    if sampler.first_call_ticks is not None:
        idle, total = (b - a for a, b in zip(sampler.first_call_ticks, idle_ticks(), strict=True))
        run.busy_cores = (1 - idle / total) * (os.cpu_count() or 1) if total else None
    run.statuses = dict(counts(url))
    stats, base = sandbox.control.stats(), sampler.base
    run.calls = {
        kind: n - base["calls"].get(kind, 0)
        for kind, n in (stats.get("calls") or {}).items()
        if n > base["calls"].get(kind, 0)
    }
    account = (stats.get("twilio_concurrency") or {}).get(TWILIO_SID, {})
    before = (base.get("twilio_concurrency") or {}).get(TWILIO_SID, {})
    run.busy_s = float(account.get("busy_s", 0.0)) - float(before.get("busy_s", 0.0))
    run.peak = int(account.get("peak", 0))  # (over the sandbox's whole run: no delta)
    run.refused = int(account.get("refused", 0)) - int(before.get("refused", 0))
    # The run's first second of sending (its workers' boot before it sent nothing).
    first_s = (sampler.first_call_at or sampler.started_at) - sampler.started_at
    run.refused_after_first_s = run.refused - sampler.refused_by(first_s + 1.0)


# --- ours --------------------------------------------------------------------------------------


def submit_batches(url: str, redis_url: str, sandbox_url: str, account: int, ids: list[int]):
    """`POST /v0/contact/batch` as the API runs it, 1,000 items at most each."""
    from worker.app.batches import BatchService
    from worker.app.contacts import ContactService
    from worker.runtime.celery_app import CeleryPublisher, create_celery
    from worker.settings import Settings
    from worker.store.db import Database

    settings = Settings(database_url=url, redis_url=redis_url, sandbox_url=sandbox_url)
    db = Database(url, pool_size=2)
    try:
        service = ContactService(db, settings, CeleryPublisher(create_celery(settings)))
        batches = []
        for start in range(0, len(ids), 1000):
            items = [
                {"assistant_id": a, "contact_type": "phone"} for a in ids[start : start + 1000]
            ]
            reply = BatchService(service).submit(
                account, json.dumps({"items": items}).encode(), path="/v0/contact/batch"
            )
            batches.append(reply.body["info"]["batch_id"])
        return batches
    finally:
        db.dispose()


def second_account(url: str, assistants: int) -> tuple[int, list[int]]:
    from worker.store import accounts, credits
    from worker.store.db import Database

    db = Database(url, pool_size=1)
    try:
        with db.write() as session:
            account = accounts.create_account(session, "small")
            credits.top_up(session, account.id, 10**12, f"topup:bench:{account.id}")
            ids = accounts.create_assistants(session, account.id, "small", assistants)
        return account.id, ids
    finally:
        db.dispose()


def ours(args, dbs, sandbox, redis, label: str, large: int, small: int) -> Run:
    run = Run(label, large + small)
    warm = 0 if large else args.warm
    seeded = seed(dbs, label, large + warm or 1)  # (an empty insert would make one row anyway)
    small_account, small_ids = second_account(seeded.url, small)
    redis.flushdb()
    prepare(sandbox, args, large + small + warm)
    env = worker_env(seeded.url, args.redis_url, sandbox.url, tempfile.mkdtemp())
    env["PROVISIONER_PROVIDER_CONCURRENCY"] = f"twilio={args.cap}"
    env["PROVISIONER_TWILIO_ACCOUNT_SID"] = TWILIO_SID
    log = open(OUT / f"limits-{label}.log", "w")  # noqa: SIM115 - closed below
    workers = []
    big = seeded.assistant_ids[:large]
    try:
        if big:
            submit_batches(seeded.url, args.redis_url, sandbox.url, seeded.account_id, big)
        sampler = Sampler(sandbox)
        if not warm:
            sampler.start()
        workers = start_workers(
            env,
            log,
            processes=args.processes,
            concurrency=args.concurrency,
            queues="interactive,bulk",
        )
        if warm:  # idle, warmed-up workers: a few contacts run to the end first
            warm_ids = seeded.assistant_ids[:warm]
            submit_batches(seeded.url, args.redis_url, sandbox.url, seeded.account_id, warm_ids)
            if not wait_terminal(seeded.url, warm, "", args.timeout_s, args.stall_s):
                raise RuntimeError(f"the warm-up did not finish; see {log.name}")
            sampler.start()
        else:  # the workers are busy with the large batch when the small one comes
            if not wait_started(seeded.url):
                raise RuntimeError(f"the workers did not start; see {log.name}")
            time.sleep(args.small_after_s)
        started = time.monotonic()
        submit_batches(seeded.url, args.redis_url, sandbox.url, small_account, small_ids)
        where = f"WHERE account_id = {small_account}"
        if wait_terminal(seeded.url, small, where, args.timeout_s, args.stall_s):
            run.small_s = time.monotonic() - started
        if not wait_terminal(seeded.url, large + small + warm, "", args.timeout_s, args.stall_s):
            run.error = f"not all terminal: {dict(counts(seeded.url))}"
        finish(run, sandbox, sampler, seeded.url)
        run.statuses = dict(counts(seeded.url, where if warm else ""))
    finally:
        for w in workers:
            stop_process(w, signal.SIGTERM, 30)
        log.close()
        dbs.drop(seeded.name)
    return run


def wait_started(url: str, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(n for s, n in counts(url).items() if s != "pending"):
            return True
        time.sleep(0.05)
    return False


# --- the peer ----------------------------------------------------------------------------------


def peer(args, dbs, sandbox, redis, label: str, large: int, small: int) -> Run:
    from celery import Celery
    from peer.models import create_schema

    run = Run(label, large + small)
    warm = 0 if large else args.warm
    total = large + small + warm
    name, url = dbs.create(label)
    create_schema(url, assistants=total, api_key=PEER_KEY, pending=total)
    redis.flushdb()
    prepare(sandbox, args, total)
    app = Celery("peer", broker=args.redis_url)

    def publish(first: int, last: int) -> None:
        with app.producer_or_acquire() as producer:
            for i in range(first, last + 1):
                app.send_task(
                    "peer.provision_contact", args=[f"ct_peer{i}"], queue="peer", producer=producer
                )

    log = open(OUT / f"limits-{label}.log", "w")  # noqa: SIM115 - closed below
    workers = []
    try:
        publish(1, large)
        sampler = Sampler(sandbox)
        if not warm:
            sampler.start()
        workers = start_peer_workers(
            peer_env(url, args.redis_url, sandbox.url),
            log,
            processes=args.processes,
            concurrency=args.concurrency,
        )
        if warm:
            publish(large + small + 1, total)
            warm_ids = ", ".join(f"'ct_peer{i}'" for i in range(large + small + 1, total + 1))
            if not wait_terminal(url, warm, f"WHERE id IN ({warm_ids})", args.timeout_s, 30):
                raise RuntimeError(f"the peer's warm-up did not finish; see {log.name}")
            sampler.start()
        else:
            if not wait_started(url):
                raise RuntimeError(f"the peer's workers did not start; see {log.name}")
            time.sleep(args.small_after_s)
        started = time.monotonic()
        publish(large + 1, large + small)
        ids = ", ".join(f"'ct_peer{i}'" for i in range(large + 1, large + small + 1))
        # The peer's one terminal state is active; a contact whose retries ran out stays put.
        where = f"WHERE id IN ({ids})"
        if wait_terminal(url, small, where, args.timeout_s, args.stall_s):
            run.small_s = time.monotonic() - started
        if not wait_terminal(url, total, "", args.timeout_s, args.stall_s):
            run.error = f"not all terminal: {dict(counts(url))}"
        finish(run, sandbox, sampler, url)
        run.statuses = dict(counts(url, where if warm else ""))
    finally:
        for w in workers:
            stop_process(w, signal.SIGTERM, 30)
        log.close()
        app.close()
        dbs.drop(name)
    return run


def prepare(sandbox: Sandbox, args: argparse.Namespace, contacts: int) -> None:
    sandbox.ready(inventory_for(contacts, ["US"]), args.latency_ms, ["US"])
    sandbox.control.set_faults(twilio_concurrency_limit=args.cap)


# --- report ------------------------------------------------------------------------------------


def report(args: argparse.Namespace, runs: dict[str, dict[str, Run]]) -> list[str]:
    rows: list[tuple[str, ...]] = [("figure", "ours", "peer", "target")]
    together = {s: runs[s]["together"] for s in runs}
    alone = {s: runs[s]["alone"] for s in runs}

    def row(name: str, value: Any, target: str = "") -> None:
        rows.append((name, *(value(s) for s in ("ours", "peer")), target))

    row(
        f"cap utilisation (busy / {args.cap} x wall)",
        lambda s: fmt(together[s].utilisation(args.cap)),
        ">= 0.9",
    )
    row(
        "  from the first Twilio request",
        lambda s: fmt(together[s].utilisation(args.cap, together[s].sending_s)),
        ">= 0.9",
    )
    row("20429s met", lambda s: str(together[s].refused))
    row("20429s after the first second", lambda s: str(together[s].refused_after_first_s), "0")
    row("Twilio requests in flight at most", lambda s: str(together[s].peak), f"<= {args.cap}")
    row("wall s (all contacts)", lambda s: fmt(together[s].wall_s, 1))
    row("  from the first Twilio request", lambda s: fmt(together[s].sending_s, 1))
    row(
        f"  machine busy, cores of {os.cpu_count()}, over it",
        lambda s: fmt(together[s].busy_cores),
    )
    row("small batch s, beside the large one", lambda s: fmt(together[s].small_s, 1))
    row("small batch s, alone", lambda s: fmt(alone[s].small_s, 1))
    row(
        "  beside / alone",
        lambda s: fmt((together[s].small_s or 0) / alone[s].small_s if alone[s].small_s else None),
        "<= 1.5x",
    )
    for kind in sorted({k for s in runs for k in together[s].calls_per_active()} - {"total"}):
        row(
            f"calls per active contact: {kind}",
            lambda s, k=kind: fmt(together[s].calls_per_active().get(k)),
        )
    row(
        "calls per active contact: total",
        lambda s: fmt(together[s].calls_per_active().get("total")),
    )
    row("statuses", lambda s: " ".join(f"{k}={v}" for k, v in sorted(together[s].statuses.items())))
    lines = [
        f"{args.contacts} contacts ({args.contacts - args.small} + {args.small}), Twilio cap "
        f"{args.cap}, concurrency {args.concurrency} x {args.processes} processes, sandbox "
        f"{args.latency_ms:g} ms:",
        table(rows),
    ]
    errors = [f"  {r.label}: {r.error}" for side in runs.values() for r in side.values() if r.error]
    return lines + (["errors:", *errors] if errors else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--small-after-s", type=float, default=2.0)
    parser.add_argument("--warm", type=int, default=10, help="contacts run before 'alone'")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--stall-s", type=float, default=90.0)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="FLUSHED")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    redis = claim_redis(args.redis_url)
    if redis is None:
        return 2
    dbs = Databases(args.database_url)
    sandbox = Sandbox(OUT / "limits-sandbox.log")
    large = args.contacts - args.small
    runs: dict[str, dict[str, Run]] = {}
    try:
        sides = {"ours": ours} if args.skip_peer else {"ours": ours, "peer": peer}
        for side, fn in sides.items():
            runs[side] = {}
            for kind, n in (("together", large), ("alone", 0)):
                label = f"limits_{side}_{kind}"
                print(f"[{label}] {n} + {args.small} contacts", flush=True)
                runs[side][kind] = fn(args, dbs, sandbox, redis, label, n, args.small)
        if "peer" not in runs:
            runs["peer"] = {k: Run(f"peer-{k}", 0) for k in ("together", "alone")}
        lines = report(args, runs)
    finally:
        sandbox.stop()
        dbs.drop_all()
    print("\n".join(lines))
    out = OUT / f"limits-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"\nsaved {out.relative_to(OUT.parent.parent)}; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
