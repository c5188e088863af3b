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
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

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


# --- CPU accounting from /proc ---------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_ticks(pid: int, field: str = "both") -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    utime, stime = int(fields[11]), int(fields[12])
    return {"both": utime + stime, "user": utime, "system": stime}[field]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _by_name(names: tuple[str, ...]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _idle_ticks() -> tuple[int, int]:
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return parts[3] + parts[4], sum(parts)  # idle + iowait, total


class CpuMeter:
    """CPU time of the API tree, PostgreSQL and Redis over an interval, as % of one core."""

    def __init__(self, api_pid: int) -> None:
        self.groups = {
            "api": lambda: _tree(api_pid),
            "postgres": lambda: _by_name(("postgres",)),
            "redis": lambda: _by_name(("redis-server",)),
        }

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {
            name: {pid: _proc_ticks(pid) for pid in pids()} for name, pids in self.groups.items()
        }
        snap["_api_system"] = sum(_proc_ticks(pid, "system") for pid in snap["api"])
        snap["_machine"] = _idle_ticks()
        snap["_t"] = time.monotonic()
        return snap

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        seconds = after["_t"] - before["_t"]
        out = {}
        for name in ("api", "postgres", "redis"):
            ticks = sum(t - before[name].get(pid, 0) for pid, t in after[name].items())
            out[name] = 100.0 * ticks / CLK_TCK / seconds
        out["api_system"] = (
            100.0 * (after["_api_system"] - before["_api_system"]) / CLK_TCK / seconds
        )
        idle = after["_machine"][0] - before["_machine"][0]
        total = after["_machine"][1] - before["_machine"][1]
        cores = os.cpu_count() or 1
        out["cores"] = cores
        out["idle"] = 100.0 * cores * idle / total if total else 0.0
        return out


# --- the run ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_wrk(
    name: str,
    url: str,
    script: Path,
    args: argparse.Namespace,
    seconds: float,
    script_args: list[str],
    meter: CpuMeter | None,
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
        result.cpu = CpuMeter.delta(before, after)
        seconds_run = after["_t"] - before["_t"]
        wrk_cpu = usage.ru_utime + usage.ru_stime
        result.cpu["wrk"] = 100.0 * wrk_cpu / seconds_run
        accounted = sum(result.cpu[k] for k in ("api", "postgres", "redis", "wrk", "idle"))
        result.cpu["other"] = max(0.0, 100.0 * result.cpu["cores"] - accounted)
    return result


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the API did not become ready in {timeout} s; see {log}")


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def api_command(args: argparse.Namespace, port: int) -> list[str]:
    script = Path(sys.executable).parent / "provisioner"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "worker.cli"]
    cmd = [*base, "api", "--host", "127.0.0.1", "--port", str(port)]
    if args.workers != 1:
        cmd += ["--workers", str(args.workers)]
    return cmd + list(args.api_arg)


def api_environment(args: argparse.Namespace, url: str, var_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=url,
        PROVISIONER_REDIS_URL=args.redis_url,
        PROVISIONER_RATE_LIMIT=args.rate_limit,
        PROVISIONER_LOG_LEVEL="WARNING",
        PROVISIONER_LOG_FORMAT="json",
        PROVISIONER_VAR_DIR=var_dir,
    )
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


# --- profile summary -------------------------------------------------------------------------

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({match['file']})"


def summarise_profile(raw: Path, top: int) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            incl_counts[name] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples", "", f"top {top} by self time:"]
    for name, count in self_counts.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", f"top {top * 2} by inclusive time:"]
    for name, count in incl_counts.most_common(top * 2):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)


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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = [
        f"wrk -t{args.threads} -c{args.clients} -d{args.seconds}s; API workers: {args.workers}"
        + (" (under py-spy: figures depressed by sampling)" if args.profile else "")
    ]
    for row in rows:
        out.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
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


def redis_strangers(url: str) -> int:
    """Other clients connected to the Redis database the bench is about to flush."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        me, db = client.client_id(), client.connection_pool.connection_kwargs.get("db", 0)
        return sum(
            1 for c in client.client_list() if int(c["db"]) == int(db) and int(c["id"]) != me
        )
    finally:
        client.close()


def db_commits(admin: Any, name: str) -> int:
    from sqlalchemy import text

    with admin.connect() as conn:
        return int(
            conn.execute(
                text("SELECT xact_commit FROM pg_stat_database WHERE datname = :name"),
                {"name": name},
            ).scalar_one()
        )


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


def _py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def main() -> int:
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
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("wrk not found on PATH (Debian/Ubuntu: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if args.profile and not _py_spy():
        print("py-spy not found (it is a dev dependency: install the venv)", file=sys.stderr)
        return 2

    import redis
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from worker.store import accounts, credits
    from worker.store.db import Database, normalise_url
    from worker.store.migrate import upgrade

    strangers = redis_strangers(args.redis_url)
    if strangers and not args.force_flush:
        print(
            f"{strangers} other client(s) are connected to {args.redis_url}, which this bench "
            "flushes; pick another database (--redis-url) or pass --force-flush",
            file=sys.stderr,
        )
        return 2

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = OUT / f"enqueue-{stamp}.log"
    admin_url = make_url(normalise_url(args.database_url))
    name = f"cp_bench_{secrets.token_hex(5)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    db_url = admin_url.set(database=name).render_as_string(hide_password=False)
    api: subprocess.Popen[bytes] | None = None
    tmp = tempfile.TemporaryDirectory(prefix="cp_bench_")
    created = False
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created = True
        setup_started = time.monotonic()
        db = Database(db_url, pool_size=1)
        upgrade(db)
        with db.write() as session:
            account = accounts.create_account(session, "bench")
            api_key = accounts.issue_key(session, account.id)
            credits.top_up(session, account.id, 10**12, f"topup:bench:{account.id}")
            ids = accounts.create_assistants(session, account.id, None, args.assistants)
        with db.engine.connect() as conn:  # planner statistics, as a live database has them
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        db.dispose()
        account_id = account.id
        first, last = ids[0], ids[-1]
        if last - first + 1 != len(ids):
            raise RuntimeError("assistant ids are not contiguous in a fresh database")
        redis_client = redis.Redis.from_url(args.redis_url)
        redis_client.flushdb()
        print(
            f"database {name}: migrated, {len(ids)} assistants "
            f"({time.monotonic() - setup_started:.1f} s); Redis {args.redis_url} flushed"
        )

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = api_command(args, port)
        env = api_environment(args, db_url, tmp.name)
        with open(log, "w") as out:
            out.write(f"$ {' '.join(cmd)}\n")
        api_log = open(OUT / f"api-{stamp}.log", "w")  # noqa: SIM115 - lives as long as the API
        api = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=api_log, stderr=subprocess.STDOUT)
        wait_ready(url, api, Path(api_log.name))
        print(f"API: {' '.join(cmd)} (pid {api.pid})")
        meter = CpuMeter(api.pid)

        scripts = Path(tmp.name)
        (scripts / "healthz.lua").write_text(LUA_HEALTHZ)
        (scripts / "enqueue.lua").write_text(LUA_ENQUEUE)

        def enqueue_args(start: int) -> list[str]:
            return [str(start), str(last), str(args.threads), api_key, PHONE_BODY]

        runs: list[WrkResult] = []
        if args.warmup:
            run_wrk(
                "warm-up",
                url + "/healthz",
                scripts / "healthz.lua",
                args,
                args.warmup,
                [],
                None,
                log,
            )
        health = run_wrk(
            "healthz", url + "/healthz", scripts / "healthz.lua", args, args.seconds, [], meter, log
        )
        commits_before = db_commits(admin, name)
        next_id = first
        if args.warmup:
            warm = run_wrk(
                "warm-up",
                url + "/v0",
                scripts / "enqueue.lua",
                args,
                args.warmup,
                enqueue_args(next_id),
                None,
                log,
            )
            runs.append(warm)
            next_id = warm.next_id

        profiler = None
        raw = OUT / f"profile-{stamp}.txt"
        if args.profile:
            spy = _py_spy() or "py-spy"
            spy_cmd = [
                spy,
                "record",
                "--pid",
                str(api.pid),
                "--format",
                "raw",
                "-o",
                str(raw),
                "--rate",
                str(args.profile_rate),
                "--duration",
                str(args.seconds),
            ]
            if args.workers != 1:
                spy_cmd.append("--subprocesses")
            spy_cmd += {"gil": ["--gil"], "active": [], "wall": ["--idle"]}[args.profile_mode]
            profiler = subprocess.Popen(
                spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            time.sleep(0.5)  # let py-spy attach before the load starts
        enqueue = run_wrk(
            "enqueue",
            url + "/v0",
            scripts / "enqueue.lua",
            args,
            args.seconds,
            enqueue_args(next_id),
            meter,
            log,
        )
        runs.append(enqueue)
        if profiler is not None:
            _, err = profiler.communicate(timeout=60)
            if profiler.returncode != 0:
                print(f"py-spy failed: {err.strip()}", file=sys.stderr)

        time.sleep(1.0)  # let requests that wrk hung up on finish before counting
        stop(api)
        api_log.close()
        time.sleep(0.5)
        commits = db_commits(admin, name) - commits_before

        print()
        print(report(health, enqueue, args))
        accepted = sum(r.ok(202) for r in runs)
        ok = verify(db_url, args.redis_url, account_id, accepted, args.clients * len(runs))
        print(
            f"  PostgreSQL commits during the enqueue runs: {commits} "
            f"({commits / max(accepted, 1):.2f} per accepted contact)"
        )
        if profiler is not None and raw.exists():
            print(
                f"\nprofile of the API during the enqueue run, py-spy {args.profile_mode} mode "
                f"({raw.relative_to(ROOT)}):"
            )
            print(summarise_profile(raw, args.top))
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
        stop(api)
        if created and not args.keep_db:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            # The tasks published for that database's contacts go with it.
            redis.Redis.from_url(args.redis_url).flushdb()
        admin.dispose()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
