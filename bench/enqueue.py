"""Enqueue benchmark: accepted POST /v0/assistant/{id}/contact per second against GET /healthz.

Creates a database of its own (`cp_bench_<random>`) on the given PostgreSQL server, migrates it,
makes one account with enough credits and one assistant per request, starts the real API
(`provisioner api`) in its own process, and drives both routes with `wrk` (C, epoll, Lua
scripts), so the load generator is not the bottleneck. Only 202s count as accepted.

After the run it checks the books: contacts in the database, reserve ledger rows, reserved
credits and messages in the Redis `interactive` list must all agree with what wrk saw
accepted (plus at most one in-flight request per connection that the server finished after
wrk hung up). Then it drops its database.

    .venv/bin/python bench/enqueue.py                       # figures
    .venv/bin/python bench/enqueue.py --profile             # + py-spy profile of the API
    .venv/bin/python bench/enqueue.py --workers 2           # uvicorn worker processes

Needs `wrk` on PATH (Debian: `apt-get install -y wrk`). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from measure import ServerCpu, record_profile, summarise_functions, table
from stack import (
    OUT,
    ROOT,
    Databases,
    claim_redis,
    provisioner_env,
    py_spy,
    seed,
    start_api,
    stop_process,
)

PHONE_BODY = '{"contact_type": "phone", "phone_country": "US"}'
PHONE_COST_CENTS = 100  # the default PROVISIONER_SETUP_COST_PHONE; the bench does not set it

# Shared by both scripts: count statuses per thread, report one JSON line from done().
LUA_COMMON = r"""
statuses = {}
used = 0
local threads = {}
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, next_id = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
    local last = t:get("last_id") or 0
    if last > next_id then next_id = last end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "statuses": {%s}, "next_id": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, table.concat(parts, ", "), next_id + 1,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

LUA_HEALTHZ = LUA_COMMON

# Thread `tid` of `n` takes assistant ids first+tid, first+tid+n, ...: every POST gets an
# assistant of its own (one live contact per assistant and type), without coordination.
LUA_ENQUEUE = (
    LUA_COMMON
    + r"""
local first, last, n, i = 0, 0, 1, 0

function init(args)
  first, last, n = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  wrk.method = "POST"
  wrk.body = args[5]
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[4]
end

function request()
  local id = first + tid + i * n
  i = i + 1
  if id > last then id = last end  -- out of assistants: shows up as 409s, never silently
  last_id = id
  return wrk.format(nil, "/v0/assistant/" .. id .. "/contact")
end
"""
)


@dataclass
class WrkResult:
    name: str
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]
    errors: dict[str, int]
    next_id: int
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core over the run

    def ok(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def rate(self, status: int) -> float:
        return self.ok(status) / self.duration_s

    def others(self, status: int) -> int:
        return self.requests - self.ok(status)


def run_wrk(
    name: str,
    url: str,
    script: Path,
    args: argparse.Namespace,
    seconds: float,
    script_args: list[str],
    meter: ServerCpu | None,
    log: Path,
) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.clients}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    if script_args:
        cmd += ["--", *script_args]
    before = meter.snapshot() if meter else None
    with open(log, "a") as out:
        shown = ["<api key>" if a.startswith("cp_") else a for a in cmd]
        out.write(f"$ {' '.join(shown)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout = proc.stdout.read() if proc.stdout else ""
        out.write(stdout)
    after = meter.snapshot() if meter else None
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}); see {log}")
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"no result line from wrk; see {log}")
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    result = WrkResult(
        name=name,
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        statuses={int(k): v for k, v in data["statuses"].items()},
        errors=data["errors"],
        next_id=data["next_id"],
    )
    if before and after:
        result.cpu = ServerCpu.delta(before, after)
        seconds_run = after["_t"] - before["_t"]
        wrk_cpu = usage.ru_utime + usage.ru_stime
        result.cpu["wrk"] = 100.0 * wrk_cpu / seconds_run
        accounted = sum(result.cpu[k] for k in ("api", "postgres", "redis", "wrk", "idle"))
        result.cpu["other"] = max(0.0, 100.0 * result.cpu["cores"] - accounted)
    return result


def api_environment(args: argparse.Namespace, url: str, var_dir: str) -> dict[str, str]:
    env = provisioner_env(
        url, args.redis_url, var_dir, rate_limit=args.rate_limit, log_format="json"
    )
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


# --- report ----------------------------------------------------------------------------------


def report(health: WrkResult, enqueue: WrkResult, args: argparse.Namespace) -> str:
    ceiling = health.rate(200)
    ratio = enqueue.rate(202) / ceiling if ceiling else 0.0
    rows = [
        ("route", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "not ok", "sock err"),
        (
            "GET /healthz (200)",
            f"{health.rate(200):.0f}",
            f"{health.p50_ms:.2f}",
            f"{health.p90_ms:.2f}",
            f"{health.p99_ms:.2f}",
            f"{health.max_ms:.1f}",
            str(health.others(200)),
            str(sum(health.errors[k] for k in ("connect", "read", "write", "timeout"))),
        ),
        (
            "POST contact (202)",
            f"{enqueue.rate(202):.0f}",
            f"{enqueue.p50_ms:.2f}",
            f"{enqueue.p90_ms:.2f}",
            f"{enqueue.p99_ms:.2f}",
            f"{enqueue.max_ms:.1f}",
            str(enqueue.others(202)),
            str(sum(enqueue.errors[k] for k in ("connect", "read", "write", "timeout"))),
        ),
    ]
    out = [
        f"wrk -t{args.threads} -c{args.clients} -d{args.seconds}s; API workers: {args.workers}"
        + (" (under py-spy: figures depressed by sampling)" if args.profile else ""),
        table(rows),
    ]
    others = {k: v for k, v in enqueue.statuses.items() if k != 202}
    if others:
        out.append(f"enqueue non-202 statuses: {others}")
    out.append(
        f"ratio enqueue/healthz: {ratio:.2f}  (target >= 0.40, p99 < 50 ms: "
        f"{'met' if ratio >= 0.4 and enqueue.p99_ms < 50 else 'NOT met'})"
    )
    for r in (health, enqueue):
        if r.cpu:
            c = r.cpu
            out.append(
                f"CPU during {r.name} (% of one core): api {c['api']:.0f} "
                f"({c['api_system']:.0f} in the kernel), "
                f"postgres {c['postgres']:.0f}, redis {c['redis']:.0f}, wrk {c['wrk']:.0f}, "
                f"anything else {c['other']:.0f}; idle {c['idle']:.0f} of {c['cores']}00"
            )
    return "\n".join(out)


def verify(db_url: str, redis_url: str, account_id: int, accepted: int, slack: int) -> bool:
    import redis
    from sqlalchemy import func, select

    from worker.store.db import Database
    from worker.store.models import Account, Contact, LedgerEntry

    db = Database(db_url, pool_size=1)
    try:
        with db.read() as session:
            contacts = session.execute(select(func.count()).select_from(Contact)).scalar_one()
            reserves = session.execute(
                select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "reserve")
            ).scalar_one()
            reserved = session.get(Account, account_id).reserved_cents  # type: ignore[union-attr]
    finally:
        db.dispose()
    queued = redis.Redis.from_url(redis_url).llen("interactive")
    late = contacts - accepted
    checks = [
        (
            0 <= late <= slack,
            f"contacts in DB: {contacts} = 202s seen by wrk {accepted} + {late} "
            f"finished after wrk hung up (allowed 0..{slack})",
        ),
        (reserves == contacts, f"reserve ledger rows: {reserves}"),
        (reserved == contacts * PHONE_COST_CENTS, f"reserved credits: {reserved / 100:.2f}"),
        (queued == contacts, f"messages in Redis 'interactive': {queued}"),
    ]
    print("\nverification (all runs, warm-ups included):")
    for ok, text in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")
    return all(ok for ok, _ in checks)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL server; the bench creates and drops a database of its own on it",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="FLUSHED")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per route")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=1, help="API (uvicorn) worker processes")
    parser.add_argument("--assistants", type=int, default=100_000)
    parser.add_argument("--rate-limit", default="1000000/second", help="PROVISIONER_RATE_LIMIT")
    parser.add_argument("--api-arg", action="append", default=[], help="extra `api` option")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the API")
    parser.add_argument("--profile", action="store_true", help="py-spy the API's enqueue run")
    parser.add_argument(
        "--profile-mode",
        choices=["gil", "active", "wall"],
        default="gil",
        help="py-spy samples: gil = the thread holding the GIL (what a GIL-bound server spends "
        "its one core on; default), active = every thread py-spy thinks is running, "
        "wall = every thread, idle ones too (--idle)",
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    parser.add_argument("--top", type=int, default=15, help="frames in the profile summary")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    parser.add_argument(
        "--force-flush", action="store_true", help="flush the Redis database even if in use"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found on PATH (Debian/Ubuntu: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if args.profile and not py_spy():
        print("py-spy not found (it is a dev dependency: install the venv)", file=sys.stderr)
        return 2
    redis = claim_redis(args.redis_url, force=args.force_flush, hint=" or pass --force-flush")
    if redis is None:
        return 2

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = OUT / f"enqueue-{stamp}.log"
    dbs = Databases(args.database_url)
    api: subprocess.Popen[bytes] | None = None
    tmp = tempfile.TemporaryDirectory(prefix="cp_bench_")
    try:
        setup_started = time.monotonic()
        seeded = seed(dbs, "", args.assistants, assistant_name=None, analyze=True)
        name, ids = seeded.name, seeded.assistant_ids
        first, last = ids[0], ids[-1]
        if last - first + 1 != len(ids):
            raise RuntimeError("assistant ids are not contiguous in a fresh database")
        redis.flushdb()
        print(
            f"database {name}: migrated, {len(ids)} assistants "
            f"({time.monotonic() - setup_started:.1f} s); Redis {args.redis_url} flushed"
        )

        env = api_environment(args, seeded.url, tmp.name)
        extra = (["--workers", str(args.workers)] if args.workers != 1 else []) + args.api_arg
        api_log = open(OUT / f"api-{stamp}.log", "w")  # noqa: SIM115 - lives as long as the API
        api, url = start_api(env, api_log, extra)
        cmd = " ".join(map(str, api.args))
        log.write_text(f"$ {cmd}\n")
        print(f"API: {cmd} (pid {api.pid})")
        meter = ServerCpu(api.pid)

        scripts = Path(tmp.name)
        (scripts / "healthz.lua").write_text(LUA_HEALTHZ)
        (scripts / "enqueue.lua").write_text(LUA_ENQUEUE)

        def wrk(
            name: str, route: str, seconds: float, meter: ServerCpu | None, start: int = 0
        ) -> WrkResult:
            """wrk on GET /healthz (`route` "healthz") or on POST contact ("enqueue", with
            assistant ids from `start` on)."""
            if route == "healthz":
                return run_wrk(
                    name, url + "/healthz", scripts / "healthz.lua", args, seconds, [], meter, log
                )
            script_args = [str(start), str(last), str(args.threads), seeded.api_key, PHONE_BODY]
            return run_wrk(
                name, url + "/v0", scripts / "enqueue.lua", args, seconds, script_args, meter, log
            )

        runs: list[WrkResult] = []
        if args.warmup:
            wrk("warm-up", "healthz", args.warmup, None)
        health = wrk("healthz", "healthz", args.seconds, meter)
        commits_before = dbs.commits(name)
        next_id = first
        if args.warmup:
            warm = wrk("warm-up", "enqueue", args.warmup, None, next_id)
            runs.append(warm)
            next_id = warm.next_id

        profiler = None
        raw = OUT / f"profile-{stamp}.txt"
        if args.profile:
            options = ["--duration", str(args.seconds)]
            if args.workers != 1:
                options.append("--subprocesses")
            options += {"gil": ["--gil"], "active": [], "wall": ["--idle"]}[args.profile_mode]
            profiler = record_profile(api.pid, raw, args.profile_rate, *options)
            time.sleep(0.5)  # let py-spy attach before the load starts
        enqueue = wrk("enqueue", "enqueue", args.seconds, meter, next_id)
        runs.append(enqueue)
        if profiler is not None:
            _, err = profiler.communicate(timeout=60)
            if profiler.returncode != 0:
                print(f"py-spy failed: {err.strip()}", file=sys.stderr)

        time.sleep(1.0)  # let requests that wrk hung up on finish before counting
        stop_process(api, signal.SIGINT, 15)
        api_log.close()
        time.sleep(0.5)
        commits = dbs.commits(name) - commits_before

        print()
        print(report(health, enqueue, args))
        accepted = sum(r.ok(202) for r in runs)
        ok = verify(
            seeded.url, args.redis_url, seeded.account_id, accepted, args.clients * len(runs)
        )
        print(
            f"  PostgreSQL commits during the enqueue runs: {commits} "
            f"({commits / max(accepted, 1):.2f} per accepted contact)"
        )
        if profiler is not None and raw.exists():
            print(
                f"\nprofile of the API during the enqueue run, py-spy {args.profile_mode} mode "
                f"({raw.relative_to(ROOT)}):"
            )
            print(summarise_functions(raw, args.top))
        results = {
            "command": sys.argv,
            "healthz": health.__dict__,
            "enqueue": enqueue.__dict__,
            "ratio": enqueue.rate(202) / health.rate(200) if health.rate(200) else 0,
            "verified": ok,
        }
        (OUT / f"enqueue-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrk output: {log.relative_to(ROOT)}")
        return 0 if ok else 1
    finally:
        stop_process(api, signal.SIGINT, 15)
        if dbs.names and not args.keep_db:
            dbs.drop_all()
            # The tasks published for that database's contacts go with it.
            redis.flushdb()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
