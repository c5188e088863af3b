"""Ours against the peer (bench/peer/): the service a team would write in a day with the same
packages and none of our guarantees. One run, one machine, the same PostgreSQL, Redis, sandbox
and load generators, the two sides alternating, printed as one table with the ratios.

    .venv/bin/python bench/versus.py                 # make bench-peer
    .venv/bin/python bench/versus.py --profile       # + py-spy of each side's API and worker

For each of `--rounds` rounds, ours then the peer's (the peer first in odd rounds):

1. accepted POSTs/s: wrk at `--clients` (32) connections for `--seconds`, after a warm-up,
   each request for an assistant of its own (only 202s count);
2. latency at a fixed offered rate (`--rate`, 300/s) for `--seconds`: an open loop (the
   requests leave on schedule, latency counted from when each was due: bench/openloop.py);
3. phone jobs/s and CPU ms per job (workers + PostgreSQL + Redis; the sandbox apart) with
   `--processes` (2) worker processes at each `--concurrency` (32, 64), sandbox at
   `--latency-ms` (100), `--jobs` (1,000) queued before the workers start;
4. the scenario a user runs (bench/versus_user.py; `--skip-user` leaves it out): the workers
   up and idle first (ours: `provisioner worker` on its default queues, and `provisioner
   beat`), then `--user-contacts` (400) contacts through the API, one POST each and (ours
   only) as one batch, timed from the first POST until all are terminal.

Needs PostgreSQL (`--database-url`: databases of the bench's own are created and dropped),
Redis (`--redis-url`, default db 15, FLUSHED; refused if another client uses it) and wrk.
Figures are printed (and saved under bench/out/), never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import versus_user
from measure import fmt, record_profile, summarise_functions, summarise_worker_profile, table
from stack import OUT, ROOT, Databases, Sandbox, claim_redis, describe_writes, py_spy
from versus_runs import (
    Api,
    closed_loop,
    fixed_rate,
    restart_peer_api,
    run_peer_worker,
    start_our_api,
    start_peer_api,
    write_scripts,
)
from worker_run import RunResult, run_worker

SIDES = ("ours", "peer")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="FLUSHED")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--rate",
        default="300,100",
        help="open-loop POSTs/s, comma-separated (300: the target's; 100: one the peer sustains)",
    )
    parser.add_argument("--assistants", type=int, default=100_000, help="per side's API database")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", default="32,64")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy each side's worker")
    parser.add_argument("--profile-rate", type=int, default=200)
    parser.add_argument("--stall-s", type=float, default=60.0)
    parser.add_argument("--top", type=int, default=12)
    versus_user.add_arguments(parser)
    args = parser.parse_args()
    # What worker_run.run_worker reads from its caller's arguments.
    args.phases, args.keep_db, args.profile_all_threads = False, False, False
    return args


def median(values: list[float]) -> float | None:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else None


def api_rounds(args: argparse.Namespace, dbs: Databases, redis: Any, stamp: str) -> dict:
    """Both APIs up side by side; each round runs the closed then the open loop on each."""
    tmp = tempfile.mkdtemp(prefix="cp_bench_")
    scripts = write_scripts(Path(tmp))
    log = OUT / f"versus-{stamp}-wrk.log"
    apis: dict[str, Api] = {}
    out: dict[str, dict[str, Any]] = {s: {"closed": []} for s in SIDES}
    rates = [float(x) for x in args.rate.split(",") if x.strip()]
    try:
        apis["ours"] = start_our_api(dbs, args.redis_url, args.assistants, tmp, stamp)
        apis["peer"] = start_peer_api(dbs, args.redis_url, args.assistants, stamp)
        for r in range(args.rounds):
            order = SIDES if r % 2 == 0 else SIDES[::-1]
            for side in order:
                api = apis[side]
                if args.warmup:
                    closed_loop(api, args.warmup, args.clients, scripts, log)
                wrk = closed_loop(api, args.seconds, args.clients, scripts, log)
                out[side]["closed"].append(wrk)
                print(
                    f"  round {r + 1} {side}: closed loop {wrk.rate(202):.0f} accepted/s, "
                    f"p50 {wrk.p50_ms:.1f} ms, p99 {wrk.p99_ms:.1f} ms, non-202 "
                    f"{wrk.others(202)}; api {wrk.cpu.get('api', 0):.0f} %, postgres "
                    f"{wrk.cpu.get('postgres', 0):.0f} %, idle {wrk.cpu.get('idle', 0):.0f} %",
                    flush=True,
                )
            for rate in rates:
                for side in order:
                    redis.flushdb()  # the queued tasks of earlier runs: nobody runs them here
                    spy = None
                    if args.profile and r == 0 and rate == rates[0]:
                        raw = OUT / f"profile-{stamp}-{side}-api.txt"
                        options = ["--gil", "--nonblocking", "--duration", str(round(args.seconds))]
                        spy = record_profile(apis[side].proc.pid, raw, 100, *options)
                        out[side]["profile"] = raw
                        time.sleep(0.5)  # let py-spy attach before the load starts
                    res, gen_cpu, cpu = fixed_rate(apis[side], rate, args.seconds)
                    if spy is not None:
                        spy.communicate(timeout=60)
                    if side == "peer":
                        apis["peer"] = restart_peer_api(apis["peer"], dbs, args.redis_url, stamp)
                    out[side].setdefault(f"open{rate:g}", []).append((res, gen_cpu, cpu))
                    print(
                        f"  round {r + 1} {side}: {rate:g}/s open loop: "
                        f"{res.statuses[202]} of {res.sent} accepted, p50 "
                        f"{res.percentile(50):.1f} ms, p99 {res.percentile(99):.1f} ms, max "
                        f"{max(res.latencies_ms or [0]):.0f} ms, errors {res.errors}, timeouts "
                        f"(10 s) {res.timeouts}, connections {res.connections}, late sends "
                        f"{res.late_sends}; generator CPU {gen_cpu:.1f} s; api "
                        f"{cpu['api']:.0f} %, idle {cpu['idle']:.0f} %",
                        flush=True,
                    )
    finally:
        for api in apis.values():
            api.stop()
        redis.flushdb()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def worker_rounds(
    args: argparse.Namespace, dbs: Databases, sandbox: Sandbox, redis: Any, stamp: str
) -> dict[str, dict[int, list[RunResult]]]:
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    out: dict[str, dict[int, list[RunResult]]] = {s: {c: [] for c in concurrencies} for s in SIDES}
    for r in range(args.rounds):
        for c in concurrencies:
            order = SIDES if (r + c // 32) % 2 == 1 else SIDES[::-1]
            for side in order:
                label = f"{side}-c{c}-r{r + 1}"
                profile = args.profile and r == 0 and c == concurrencies[0]
                common = dict(
                    label=label,
                    concurrency=c,
                    processes=args.processes,
                    jobs=args.jobs,
                    latency_ms=args.latency_ms,
                    stamp=stamp,
                    profile=profile,
                )
                if side == "ours":
                    result = run_worker(args, dbs, sandbox, redis, countries=["US"], **common)
                else:
                    result = run_peer_worker(args, dbs, sandbox, redis, **common)
                out[side][c].append(result)
    return out


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def calls_table(work: dict) -> list[str]:
    """Provider calls per active contact, by provider and kind, from the sandbox's counters,
    ours beside the peer: counts, which do not swing with the machine, so they come first."""
    per: dict[str, dict[str, list[float]]] = {s: {} for s in SIDES}
    for side in SIDES:
        for runs in work[side].values():
            for run in runs:
                for kind, n in run.calls_per_active().items():
                    per[side].setdefault(kind, []).append(n)
    kinds = [*sorted({k for side in SIDES for k in per[side]} - {"total"}), "total"]
    rows: list[tuple[str, ...]] = [("provider calls per active contact", "ours", "peer", "target")]
    for kind in kinds:
        value = {s: median(per[s].get(kind, [])) for s in SIDES}
        target = "<= 1.1 (phone)" if kind == "total" else ""
        rows.append((f"  {kind}", fmt(value["ours"]), fmt(value["peer"]), target))
    return ["provider calls per active contact (sandbox counters, median over runs):", table(rows)]


def spread_lines(api: dict | None, work: dict | None) -> list[str]:
    """Each round's figure on each side, the ratio within the round, and each side's spread
    ((max - min) / median over the rounds): which side a swing of the ratio comes from."""
    figures: list[tuple[str, dict[str, list[float]]]] = []
    if api:
        figures.append(
            ("accepted POSTs/s", {s: [w.rate(202) for w in api[s]["closed"]] for s in SIDES})
        )
        for key in sorted(k for k in api["ours"] if k.startswith("open")):
            rate = key[len("open") :]
            figures.append(
                (
                    f"p99 ms at {rate}/s",
                    {s: [o[0].percentile(99) for o in api[s].get(key, [])] for s in SIDES},
                )
            )
    if work:
        for c in work["ours"]:
            figures.append(
                (f"phone jobs/s C = {c}", {s: [r.jobs_per_s for r in work[s][c]] for s in SIDES})
            )
            figures.append(
                (f"CPU ms/job C = {c}", {s: [r.cpu_total_ms for r in work[s][c]] for s in SIDES})
            )
    rows: list[tuple[str, ...]] = [("figure, by round", "ours", "peer", "ours / peer")]
    for name, values in figures:
        for r, (ours, peer) in enumerate(zip(values["ours"], values["peer"], strict=False)):
            rows.append((f"{name}, round {r + 1}", fmt(ours, 1), fmt(peer, 1), ratio(ours, peer)))
        spread = {s: _spread(values[s]) for s in SIDES}
        rows.append((f"  spread of {name}", spread["ours"], spread["peer"], ""))
    return ["each round, and each side's spread ((max - min) / median):", table(rows)]


def _spread(values: list[float]) -> str:
    mid = median(values)
    if not mid or len(values) < 2:
        return "-"
    return f"{(max(values) - min(values)) / mid * 100:.0f} %"


def report(
    args: argparse.Namespace, api: dict | None, work: dict | None, user: dict | None = None
) -> list[str]:
    rows: list[tuple[str, ...]] = [("figure", "ours", "peer", "ours / peer", "target")]
    if api:
        acc = {s: median([w.rate(202) for w in api[s]["closed"]]) for s in SIDES}
        rows.append(
            (
                f"accepted POSTs/s, {args.clients} connections",
                fmt(acc["ours"], 0),
                fmt(acc["peer"], 0),
                ratio(acc["ours"], acc["peer"]),
                ">= 4x",
            )
        )
        for rate in [float(x) for x in args.rate.split(",") if x.strip()]:
            runs = {s: api[s].get(f"open{rate:g}", []) for s in SIDES}
            for p in (50, 99):
                lat = {s: median([o[0].percentile(p) for o in runs[s]]) for s in SIDES}
                rows.append(
                    (
                        f"p{p} ms at {rate:g} POSTs/s (open loop)",
                        fmt(lat["ours"], 1),
                        fmt(lat["peer"], 1),
                        ratio(lat["ours"], lat["peer"]),
                        "< 25 ms" if p == 99 and rate == 300 else "",
                    )
                )
            late = {s: median([o[0].timeouts for o in runs[s]]) for s in SIDES}
            rows.append(
                (
                    f"  unanswered in 10 s at {rate:g}/s (of {rate * args.seconds:.0f})",
                    fmt(late["ours"], 0),
                    fmt(late["peer"], 0),
                    "",
                    "",
                )
            )
        cpu = {
            s: median([w.cpu["api"] / max(w.rate(202), 1) * 10 for w in api[s]["closed"]])
            for s in SIDES
        }
        rows.append(
            (
                "API CPU ms per accepted POST (closed loop)",
                fmt(cpu["ours"]),
                fmt(cpu["peer"]),
                ratio(cpu["ours"], cpu["peer"]),
                "",
            )
        )
    if work:
        for c in work["ours"]:
            jobs = {s: median([r.jobs_per_s for r in work[s][c]]) for s in SIDES}
            cpu = {s: median([r.cpu_total_ms for r in work[s][c]]) for s in SIDES}
            sbx = {s: median([r.cpu_ms("sandbox") or 0 for r in work[s][c]]) for s in SIDES}
            xacts = {s: median([r.xacts_per_job or 0 for r in work[s][c]]) for s in SIDES}
            shape = f"C = {c}, {args.processes} processes"
            rows.append(
                (
                    f"phone jobs/s, {shape}",
                    fmt(jobs["ours"], 1),
                    fmt(jobs["peer"], 1),
                    ratio(jobs["ours"], jobs["peer"]),
                    ">= 1.3x" if c <= 32 else ">= 1.2x",
                )
            )
            rows.append(
                (
                    f"CPU ms/job (workers + db + redis), C = {c}",
                    fmt(cpu["ours"]),
                    fmt(cpu["peer"]),
                    ratio(cpu["ours"], cpu["peer"]),
                    "<= 1x",
                )
            )
            rows.append(
                (
                    f"  sandbox CPU ms/job, not counted, C = {c}",
                    fmt(sbx["ours"]),
                    fmt(sbx["peer"]),
                    "",
                    "",
                )
            )
            rows.append(
                (
                    f"  PostgreSQL transactions/job, C = {c}",
                    fmt(xacts["ours"], 1),
                    fmt(xacts["peer"], 1),
                    "",
                    "",
                )
            )
    if user:
        rows += versus_user.rows(args, user)
    lines = []
    if work:
        lines += [*calls_table(work), ""]
    lines += [f"ours vs the peer, medians of {args.rounds} round(s):", table(rows)]
    if args.rounds > 1:
        lines += ["", *spread_lines(api, work)]
    if work:
        lines.append("")
        lines.append("each worker run (workers + db + redis CPU ms/job; machine busy in cores):")
        for side in SIDES:
            for runs in work[side].values():
                for r in runs:
                    busy = (r.cpu.get("machine_busy") or 0) / (r.cpu.get("seconds") or 1)
                    polls = max(r.db_polls, 1)
                    waits = ", ".join(
                        f"{k} {v / polls:.1f}"
                        for k, v in sorted(r.db_waits.items(), key=lambda kv: -kv[1])[:3]
                    )
                    lines.append(
                        f"  {r.label}: {r.jobs_per_s:.1f} jobs/s, {r.cpu_total_ms:.2f} ms/job "
                        f"(worker {fmt(r.cpu_ms('worker'))}, db {fmt(r.cpu_ms('db'))}, redis "
                        f"{fmt(r.cpu_ms('redis'))}), calls/job {r.calls_per_job:.2f}, "
                        f"machine busy {busy:.2f}, statuses {r.statuses}; PostgreSQL "
                        f"backends by wait (mean over polls): {waits or '-'}"
                    )
                    if r.writes:
                        lines += [f"    {line}" for line in describe_writes(r.writes)]
    if user:
        lines += ["", *versus_user.lines(user, args.top)]
    return lines


def main() -> int:
    args = parse_args()
    if not args.skip_api and shutil.which("wrk") is None:
        print("wrk not found on PATH (Debian/Ubuntu: apt-get install -y wrk)", file=sys.stderr)
        return 2
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
    load0 = os.getloadavg()
    try:
        api = None if args.skip_api else api_rounds(args, dbs, redis, stamp)
        work = user = None
        if not (args.skip_workers and args.skip_user):
            sandbox = Sandbox(OUT / f"versus-{stamp}-sandbox.log")
        if not args.skip_workers and sandbox is not None:
            work = worker_rounds(args, dbs, sandbox, redis, stamp)
        if not args.skip_user and sandbox is not None:
            user = versus_user.user_rounds(args, dbs, sandbox, redis, stamp)
        lines = report(args, api, work, user)
        lines.append(f"\nload average before / after: {load0[0]:.2f} / {os.getloadavg()[0]:.2f}")
        for side in SIDES if api and args.profile else ():
            raw = api[side].get("profile")
            if raw is not None and raw.exists():
                lines += ["", f"profile of {side}'s API, open loop, py-spy --gil ({raw}):"]
                lines.append(summarise_functions(raw, args.top))
        if work and args.profile:
            for side in SIDES:
                for runs in work[side].values():
                    for r in runs:
                        if r.profile:
                            text, _ = summarise_worker_profile(Path(r.profile), args.top)
                            lines += ["", f"profile of {r.label}'s first worker ({r.profile}):"]
                            lines.append(text)
        print("\n" + "\n".join(lines))
        path = OUT / f"versus-{stamp}.txt"
        path.write_text(" ".join(sys.argv) + "\n" + "\n".join(lines) + "\n")
        print(f"\nsaved {path.relative_to(ROOT)}")
        return 0
    finally:
        if sandbox is not None:
            sandbox.stop()
        dbs.drop_all()
        with contextlib.suppress(Exception):
            redis.flushdb()


if __name__ == "__main__":
    sys.exit(main())
