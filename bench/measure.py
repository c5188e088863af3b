"""How the benches measure, and print what they measured.

- CPU and memory of processes: `Meter` (psutil; the CPU seconds of the workers, the sandbox,
  the bench itself, PostgreSQL per database through `PgCpu`, Redis through `INFO cpu`, and the
  whole machine, between start() and stop(); the workers' RSS), `vm_hwm`, and `ServerCpu`
  (from /proc: the API's process tree, PostgreSQL and Redis, as % of one core, for enqueue.py);
- py-spy profiles: `record_profile` starts one, `summarise_functions` and
  `summarise_worker_profile` read its raw (collapsed) output back;
- `table` and `fmt`, for the printed tables.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stack import py_spy

PG_AUX = re.compile(r"\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]")  # a client backend's cmdline


# --- CPU and memory (psutil) -----------------------------------------------------------------


def cpu_s(times: Any) -> float:
    return float(
        times.user
        + times.system
        + getattr(times, "children_user", 0.0)
        + getattr(times, "children_system", 0.0)
    )


def redis_cpu(client: Any) -> float | None:
    try:
        info = client.info("cpu")
    except Exception:
        return None
    return float(info.get("used_cpu_user", 0.0)) + float(info.get("used_cpu_sys", 0.0))


def vm_hwm(pid: int) -> int | None:
    """The process's lifetime high-water mark of RSS, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else None


class PgCpu:
    """CPU seconds of the PostgreSQL server's processes, per pid, tracked between samples:
    our database's backends (except the poller), the shared processes (walwriter, checkpointer,
    ...), and, only as a noise gauge, other databases' backends and the postmaster."""

    def __init__(self, dbname: str, exclude: set[int]) -> None:
        self.dbname = dbname
        self.exclude = exclude
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.names: dict[int, str] = {}

    def _scan(self) -> dict[int, float]:
        import psutil

        seen: dict[int, float] = {}
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != "postgres" or proc.pid in self.exclude:
                continue
            try:
                if proc.pid not in self.kind:
                    cmd = " ".join(proc.cmdline())
                    self.names[proc.pid] = cmd.split(":", 2)[-1].strip() or cmd
                    if self.dbname in cmd.split():
                        self.kind[proc.pid] = "ours"
                    elif PG_AUX.search(cmd) or "bin/postgres" in cmd:
                        # Other databases' backends, and the postmaster, whose CPU goes
                        # mostly to forking backends for whoever else connects: noise here.
                        self.kind[proc.pid] = "other"
                    else:
                        self.kind[proc.pid] = "aux"
                seen[proc.pid] = cpu_s(proc.cpu_times())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return seen

    def start(self) -> None:
        self.base = self._scan()
        self.last = dict(self.base)

    def sample(self) -> None:
        self.last.update(self._scan())

    def totals(self) -> dict[str, float]:
        out = {"ours": 0.0, "aux": 0.0, "other": 0.0}
        for pid, value in self.last.items():
            out[self.kind.get(pid, "other")] += value - self.base.get(pid, 0.0)
        return out

    def shared(self) -> dict[str, float]:
        """CPU seconds of each shared process (postmaster, walwriter, checkpointer, ...)."""
        return {
            f"{self.names.get(pid, '?')} ({pid})": round(value - self.base.get(pid, 0.0), 3)
            for pid, value in self.last.items()
            if self.kind.get(pid) == "aux"
        }


class Meter:
    """CPU seconds of every party between start() and stop()."""

    def __init__(
        self,
        worker_pids: list[int],
        sandbox_pid: int,
        dbname: str | None,
        exclude: set[int],
        redis: Any,
    ) -> None:
        import psutil

        self.psutil = psutil
        self.workers = [psutil.Process(pid) for pid in worker_pids]
        self.worker = self.workers[0]
        self.sandbox = psutil.Process(sandbox_pid)
        self.me = psutil.Process()
        self.pg = PgCpu(dbname, exclude) if dbname else None
        self.redis = redis
        self.t0 = self.t1 = 0.0
        self.v0: dict[str, float | None] = {}
        self.v1: dict[str, float | None] = {}

    def _read(self) -> dict[str, float | None]:
        machine = self.psutil.cpu_times()
        workers = [w.cpu_times() for w in self.workers]
        return {
            "worker": sum(cpu_s(t) for t in workers),
            "worker_user": sum(float(t.user) for t in workers),
            "worker_system": sum(float(t.system) for t in workers),
            "sandbox": cpu_s(self.sandbox.cpu_times()),
            "bench": cpu_s(self.me.cpu_times()),
            "redis": redis_cpu(self.redis),
            "machine_busy": sum(
                getattr(machine, k, 0.0)
                for k in ("user", "nice", "system", "irq", "softirq", "steal")
            ),
        }

    def start(self) -> None:
        self.t0 = time.monotonic()
        if self.pg:
            self.pg.start()
        self.v0 = self._read()

    def sample(self) -> None:
        if self.pg:
            self.pg.sample()

    def stop(self) -> None:
        self.t1 = time.monotonic()
        self.v1 = self._read()
        if self.pg:
            self.pg.sample()

    def result(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"seconds": self.t1 - self.t0}
        for key, end in self.v1.items():
            begin = self.v0.get(key)
            out[key] = None if end is None or begin is None else end - begin
        if self.pg:
            pg = self.pg.totals()
            out["db"] = pg["ours"] + pg["aux"]
            out["db_backends"] = pg["ours"]
            out["db_shared"] = pg["aux"]
            out["db_other_databases"] = pg["other"]
        return out


# --- CPU from /proc, as % of one core --------------------------------------------------------

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


def idle_ticks() -> tuple[int, int]:
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return parts[3] + parts[4], sum(parts)  # idle + iowait, total


class ServerCpu:
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
        snap["_machine"] = idle_ticks()
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


# --- py-spy profiles -------------------------------------------------------------------------


def record_profile(
    pid: int, out: Path, rate: int, *options: str, stderr: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """`py-spy record` of `pid` into `out`, raw (collapsed) format, until SIGINT or the end of
    a `--duration` among `options`."""
    cmd = [py_spy() or "py-spy", "record", "--pid", str(pid), "--format", "raw", "-o", str(out)]
    cmd += ["--rate", str(rate), *options]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, text=True)


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def split_frame(frame: str) -> tuple[str, str]:
    """`func (file:line)` as (func, file); anything else as (the frame, "")."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match["func"], match["file"]


def stacks(raw: Path) -> Iterator[tuple[list[tuple[str, str]], int]]:
    """Each stack of py-spy's raw output, outermost frame first, with its sample count."""
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            yield [split_frame(f) for f in stack.split(";") if f], int(count_text)


def shares(counts: Counter[str], total: int, n: int | None = None) -> list[str]:
    return [f"  {100 * c / total:5.1f}%  {name}" for name, c in counts.most_common(n)]


def summarise_functions(raw: Path, top: int) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for stack, count in stacks(raw):
        frames = [f"{func} ({file})" if file else func for func, file in stack]
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
    lines += shares(self_counts, total, top)
    lines += ["", f"top {top * 2} by inclusive time:"]
    lines += shares(incl_counts, total, top * 2)
    return "\n".join(lines)


PACKAGES = (
    ("sqlalchemy", "SQLAlchemy"),
    ("psycopg_pool", "psycopg"),
    ("psycopg", "psycopg"),
    ("kombu", "kombu"),
    ("celery", "Celery"),
    ("billiard", "Celery"),
    ("vine", "Celery"),
    ("httpx", "httpx"),
    ("httpcore", "httpcore/h11"),
    ("h11", "httpcore/h11"),
    ("anyio", "httpcore/h11"),
    ("structlog", "structlog"),
    ("redis", "redis-py"),
    ("pydantic", "pydantic"),
    ("orjson", "json"),
    ("json/", "json"),
    ("worker/", "worker (ours)"),
    ("sandbox/", "sandbox"),
    ("email/", "stdlib email (dates)"),
    ("threading.py", "stdlib threading"),
    ("queue.py", "stdlib threading"),
    ("socket.py", "stdlib socket/ssl"),
    ("ssl.py", "stdlib socket/ssl"),
    ("selectors.py", "stdlib socket/ssl"),
    ("uuid.py", "stdlib uuid"),
    ("logging/", "stdlib logging"),
    ("datetime", "stdlib datetime"),
    ("urllib/", "stdlib urllib"),
    ("typing.py", "stdlib typing"),
    ("enum.py", "stdlib enum"),
)


def package_of(path: str) -> str:
    norm = path.replace("\\", "/")
    site = norm.split("site-packages/", 1)
    norm = site[1] if len(site) == 2 else norm
    for needle, name in PACKAGES:
        if needle in norm:
            return name
    return "stdlib/other" if "python3" in path else "other"


# Where a sample's stack is, by the functions on it (inclusive; a stack may count in several).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the task body (Pipeline.run)", ("Pipeline.run",)),
    ("  store.take_lease (UPDATE..RETURNING, steps)", ("take_lease",)),
    ("  store.start_step", ("start_step",)),
    ("  store.record_step (journal)", ("record_step",)),
    ("  store.activate (capture, outbox)", ("activate",)),
    ("  provider HTTP (ProviderClient._request)", ("ProviderClient._request",)),
    ("  SQLAlchemy Session.execute", ("Session.execute",)),
    ("  ORM flush (session.add + flush)", ("Session._flush",)),
    ("  pool checkout incl. pre-ping", ("_ConnectionFairy._checkout",)),
    ("    of which the pre-ping (SELECT 1)", ("DefaultDialect._do_ping_w_event",)),
    ("  COMMIT (SessionTransaction.commit)", ("SessionTransaction.commit",)),
    ("  statement cache key + coercion", ("HasCacheKey._generate_cache_key", "expect")),
)
OUTSIDE = "outside the task body (consumer loop, acks, thread pool)"
TRUNCATED = "stack cut short (py-spy --nonblocking): not attributable"


def _short(path: str) -> str:
    return path.split("site-packages/", 1)[-1].split("/work/main/", 1)[-1]


def summarise_worker_profile(raw: Path, top: int) -> tuple[str, dict[str, Any]]:
    """A profile of the provisioning pipeline: inclusive time by stage of a task (`STAGES`),
    self time by package and by function, and inclusive time by function."""
    self_pkg: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for stack, count in stacks(raw):
        frames = [f for f in stack if f[1] and not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        func, path = frames[-1]
        self_pkg[package_of(path)] += count
        self_fn[f"{func} ({_short(path)})"] += count
        for name in {f"{fn} ({_short(p)})" for fn, p in frames}:
            incl_fn[name] += count
        funcs = {fn for fn, _ in frames}
        for label, names in STAGES:
            if funcs.intersection(names):
                stages[label] += count
        if frames[0][0] not in ("<module>", "Thread._bootstrap"):
            stages[TRUNCATED] += count  # a partial stack (py-spy --nonblocking read a race)
        elif "Pipeline.run" not in funcs:
            stages[OUTSIDE] += count
    if not total:
        return "(no samples)", {}
    pct = lambda c: 100 * c / total  # noqa: E731
    lines = [f"{total} samples", "", "by stage (inclusive):"]
    lines += [
        f"  {pct(stages[label]):5.1f}%  {label}"
        for label in [*(label for label, _ in STAGES), OUTSIDE, TRUNCATED]
        if stages[label]
    ]
    lines += ["", "self time by package:", *shares(self_pkg, total)]
    lines += ["", f"top {top} functions by self time:", *shares(self_fn, total, top)]
    lines += ["", f"top {2 * top} functions by inclusive time:"]
    lines += shares(incl_fn, total, 2 * top)
    data = {
        "samples": total,
        "stages": {k: pct(v) for k, v in stages.items()},
        "self_by_package": {k: pct(v) for k, v in self_pkg.most_common()},
        "self_by_function": {k: pct(v) for k, v in self_fn.most_common(3 * top)},
        "inclusive": {k: pct(v) for k, v in incl_fn.most_common(6 * top)},
    }
    return "\n".join(lines), data


# --- tables ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned: the first to the left, the others to the right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )
