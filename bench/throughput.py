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

Figures are printed (and saved under bench/out/), never asserted. Nothing outside the bench's
own databases is touched; the Redis database given is flushed.
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
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

VENV_BIN = Path(sys.executable).parent
TWILIO_SID = "AC00000000000000000000000000000000"  # Settings' default account SID
CANDIDATES = 20  # numbers each find_number search asks for (worker.steps.CANDIDATES)
RAW_TASK = "bench.raw_provision"
RAW_KEYS = ("bench:raw:first", "bench:raw:last", "bench:raw:done")
PG_AUX = re.compile(r"\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]")  # a client backend's cmdline
TERMINAL = ("active", "failed")


# --- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def provisioner_cmd() -> list[str]:
    script = VENV_BIN / "provisioner"
    return [str(script)] if script.exists() else [sys.executable, "-m", "worker.cli"]


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, wait: float = 30):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_s(times: Any) -> float:
    return float(
        times.user
        + times.system
        + getattr(times, "children_user", 0.0)
        + getattr(times, "children_system", 0.0)
    )


def redis_users(client: Any) -> list[str]:
    """Other clients connected to the same Redis database (another bench, a worker)."""
    me = client.client_id()
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return [
        f"{c.get('addr')} {c.get('cmd')}"
        for c in client.client_list()
        if int(c.get("db", -1)) == int(db) and int(c.get("id", -1)) != me
    ]


class NullPublisher:
    """ContactService's publisher for the bench: the tasks are published later, all at once."""

    def provision(self, contact_id: str, *, queue: str) -> None:
        return None


# --- databases -------------------------------------------------------------------------------


class Databases:
    """Creates bench databases on the server of `--database-url` and drops them at the end."""

    def __init__(self, server_url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from worker.store.db import normalise_url

        self.server = make_url(normalise_url(server_url))
        self.admin = create_engine(self.server, isolation_level="AUTOCOMMIT", pool_size=1)
        self.token = secrets.token_hex(4)
        self.names: list[str] = []

    def create(self, label: str) -> tuple[str, str]:
        from sqlalchemy import text

        name = f"cp_bench_{self.token}_{label}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return name, self.server.set(database=name).render_as_string(hide_password=False)

    def xacts(self, name: str) -> int:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            value = conn.execute(
                text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :n"),
                {"n": name},
            ).scalar_one()
        return int(value)

    def drop(self, name: str) -> None:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if name in self.names:
            self.names.remove(name)

    def drop_all(self) -> None:
        for name in list(self.names):
            try:
                self.drop(name)
            except Exception as exc:  # keep dropping the others
                print(f"could not drop {name}: {exc}", file=sys.stderr)
        self.admin.dispose()


@dataclass
class Prepared:
    name: str
    url: str
    contact_ids: list[str]


def prepare(dbs: Databases, label: str, n: int, countries: list[str], redis_url: str) -> Prepared:
    """A migrated database with one account, n assistants and n pending phone contacts."""
    from worker.app.contacts import ContactService
    from worker.settings import Settings
    from worker.store import accounts, credits
    from worker.store.db import Database
    from worker.store.migrate import upgrade

    started = time.monotonic()
    name, url = dbs.create(label)
    db = Database(url, pool_size=8)
    try:
        upgrade(db)
        with db.write() as session:
            account = accounts.create_account(session, "bench")
            credits.top_up(session, account.id, 10**12, f"topup:bench:{account.id}")
            assistant_ids = accounts.create_assistants(session, account.id, "bench", n)
        settings = Settings(database_url=url, redis_url=redis_url)
        service = ContactService(db, settings, NullPublisher())
        path = "/v0/assistant/{}/contact"

        def submit(i: int) -> str:
            body = json.dumps(
                {"contact_type": "phone", "phone_country": countries[i % len(countries)]}
            )
            assistant = assistant_ids[i]
            reply = service.submit(
                account.id, assistant, body.encode(), path=path.format(assistant)
            )
            if reply.status != 202:
                raise RuntimeError(f"submit answered {reply.status}: {reply.body}")
            return str(reply.body["info"]["id"])

        with ThreadPoolExecutor(8) as pool:
            contact_ids = list(pool.map(submit, range(n)))
    finally:
        db.dispose()
    print(
        f"  database {name}: {n} pending phone contacts ({time.monotonic() - started:.1f} s)",
        flush=True,
    )
    return Prepared(name, url, contact_ids)


class Poller:
    """Reads status counts from the bench database on one autocommit connection."""

    def __init__(self, url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.conn = psycopg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database,
            autocommit=True,
        )
        self.queries = 0
        self.backend_pid = int(self._one("SELECT pg_backend_pid()")[0])

    def _one(self, sql: str) -> tuple[Any, ...]:
        self.queries += 1
        row = self.conn.execute(sql).fetchone()
        assert row is not None
        return tuple(row)

    def counts(self) -> Counter[str]:
        self.queries += 1
        rows = self.conn.execute("SELECT status, count(*) FROM contacts GROUP BY status")
        return Counter({status: int(n) for status, n in rows})

    def waits(self) -> Counter[str]:
        """What the database's other active backends are waiting on right now."""
        self.queries += 1
        rows = self.conn.execute(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'on CPU'), count(*) "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'active' GROUP BY 1"
        )
        return Counter({name: int(n) for name, n in rows})

    def window(self) -> float:
        """Seconds from the first contact's start to the last terminal update, per the DB."""
        (seconds,) = self._one(
            "SELECT extract(epoch FROM max(updated_at) - min(started_at)) FROM contacts "
            "WHERE status IN ('active', 'failed')"
        )
        return float(seconds or 0.0)

    def close(self) -> None:
        self.conn.close()


# --- CPU and memory meters -------------------------------------------------------------------


def redis_cpu(client: Any) -> float | None:
    try:
        info = client.info("cpu")
    except Exception:
        return None
    return float(info.get("used_cpu_user", 0.0)) + float(info.get("used_cpu_sys", 0.0))


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


# --- the sandbox -----------------------------------------------------------------------------


class Sandbox:
    def __init__(self, log: Path) -> None:
        from sandbox.testing import SandboxControl

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the sandbox exited with {self.proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(self.url + "/_sandbox/stats", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the sandbox did not start; see {log}") from None
                time.sleep(0.05)
        self.control = SandboxControl(self.url, timeout=120)

    def ready(self, inventory: int, latency_ms: float, countries: list[str]) -> None:
        """Reset with `inventory` numbers per country, generated now (one search per country,
        then a second reset), so no request of the measured run pays for generating them."""
        import httpx

        self.control.reset(inventory_per_country=inventory)
        with httpx.Client(base_url=self.url, auth=(TWILIO_SID, "x"), timeout=300) as client:
            for country in countries:
                client.get(
                    f"/2010-04-01/Accounts/{TWILIO_SID}/AvailablePhoneNumbers/{country}/Local.json",
                    params={"PageSize": 1},
                ).raise_for_status()
        self.control.reset(inventory_per_country=inventory)
        self.control.set_faults(latency_ms=latency_ms)

    def stop(self) -> None:
        self.control.close()
        stop_process(self.proc, signal.SIGTERM, 10)
        self._log.close()


def inventory_for(n: int, countries: list[str]) -> int:
    # Each search takes CANDIDATES numbers past a cursor; enough that it never wraps around
    # (a wrapped search offers numbers that other jobs hold as candidates: extra buy calls).
    per_country = -(-n // len(countries))
    return int(per_country * CANDIDATES * 1.1) + 1000


# --- one run of the real worker --------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    concurrency: int
    jobs: int
    latency_ms: float
    processes: int = 1
    elapsed_s: float = 0.0
    elapsed_poll_s: float = 0.0
    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)
    db_shared: dict[str, float] = field(default_factory=dict)
    db_waits: dict[str, int] = field(default_factory=dict)  # summed over the polls
    db_polls: int = 0
    xacts_per_job: float | None = None
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (s, done, bytes)
    rss_hwm: int | None = None
    profile: str | None = None
    phases: dict[str, Any] | None = None  # bench/phases.py's summary (--phases)
    error: str | None = None

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def calls_per_job(self) -> float:
        return self.requests / self.jobs if self.jobs else 0.0

    @property
    def io_bound(self) -> float:
        per_job = self.calls_per_job * self.latency_ms / 1000
        return self.concurrency / per_job if per_job else float("inf")

    def cpu_ms(self, key: str) -> float | None:
        value = self.cpu.get(key)
        return None if value is None else 1000 * value / self.jobs

    @property
    def cpu_total_ms(self) -> float:
        return sum(self.cpu_ms(k) or 0.0 for k in ("worker", "db", "redis"))

    @property
    def cpu_bound(self) -> float:
        cores = os.cpu_count() or 1
        return cores / (self.cpu_total_ms / 1000) if self.cpu_total_ms else float("inf")

    @property
    def ratio(self) -> float:
        return self.jobs_per_s / min(self.io_bound, self.cpu_bound)

    @property
    def cores_left(self) -> float | None:
        """Cores left to the worker, PostgreSQL and Redis: all of them minus what the sandbox,
        the bench itself and other people's processes used during the run."""
        secs, busy = self.cpu.get("seconds") or 0.0, self.cpu.get("machine_busy")
        if not secs or busy is None:
            return None
        counted = ("worker", "db", "redis", "sandbox", "bench")
        others = busy - sum(self.cpu.get(k) or 0.0 for k in counted)
        taken = others + (self.cpu.get("sandbox") or 0.0) + (self.cpu.get("bench") or 0.0)
        return (os.cpu_count() or 1) - taken / secs

    @property
    def ratio_left(self) -> float | None:
        """jobs/s over min(I/O bound, CPU bound on the cores left)."""
        left = self.cores_left
        if left is None or not self.cpu_total_ms:
            return None
        return self.jobs_per_s / min(self.io_bound, left / (self.cpu_total_ms / 1000))


def worker_env(url: str, redis_url: str, sandbox_url: str, var_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=url,
        PROVISIONER_REDIS_URL=redis_url,
        PROVISIONER_SANDBOX_URL=sandbox_url,
        PROVISIONER_TWILIO_AUTH_TOKEN="x",
        PROVISIONER_GOOGLE_ACCESS_TOKEN="x",
        PROVISIONER_LOG_LEVEL="WARNING",
        PROVISIONER_VAR_DIR=var_dir,
    )
    return env


def publish(redis_url: str, task: str, arg_lists: list[list[Any]]) -> float:
    from worker.runtime.celery_app import create_celery
    from worker.settings import Settings

    app = create_celery(Settings(redis_url=redis_url))
    started = time.monotonic()
    with app.producer_or_acquire() as producer:
        for args in arg_lists:
            app.send_task(task, args=args, queue="interactive", producer=producer)
    elapsed = time.monotonic() - started
    app.close()
    return elapsed


def run_worker(
    args: argparse.Namespace,
    dbs: Databases,
    sandbox: Sandbox,
    redis: Any,
    *,
    label: str,
    concurrency: int,
    jobs: int,
    latency_ms: float,
    countries: list[str],
    stamp: str,
    profile: bool = False,
    rss: bool = False,
    processes: int = 1,
) -> RunResult:
    print(
        f"[{label}] concurrency {concurrency} ({processes} worker process(es)), {jobs} jobs, "
        f"latency {latency_ms:g} ms",
        flush=True,
    )
    result = RunResult(label, concurrency, jobs, latency_ms, processes=processes)
    prepared = prepare(dbs, label, jobs, countries, args.redis_url)
    redis.flushdb()
    sandbox.ready(inventory_for(jobs, countries), latency_ms, countries)
    from worker.runtime.celery_app import PROVISION_TASK

    took = publish(args.redis_url, PROVISION_TASK, [[cid] for cid in prepared.contact_ids])
    queued = redis.llen("interactive")
    print(f"  published {jobs} tasks in {took:.1f} s; 'interactive' holds {queued}", flush=True)

    poller = Poller(prepared.url)
    xacts0 = dbs.xacts(prepared.name)
    polls0 = poller.queries
    tmp = tempfile.mkdtemp(prefix="cp_bench_")
    log_path = OUT / f"worker-{stamp}-{label}.log"
    per_process = str(concurrency // processes)
    cmd = [*provisioner_cmd(), "worker", "--concurrency", per_process, "--queues", "interactive"]
    phases_prefix = OUT / f"phases-{stamp}-{label}"
    if args.phases:
        # The same worker, started through bench/phases.py's probes.
        cmd = [sys.executable, str(Path(__file__).with_name("phases.py")), str(phases_prefix)]
        cmd += ["worker", "--concurrency", per_process, "--queues", "interactive"]
    spy: subprocess.Popen[str] | None = None
    raw = OUT / f"profile-{stamp}-{label}.txt"
    workers: list[subprocess.Popen[bytes]] = []
    with open(log_path, "w") as log:
        for _ in range(processes):
            workers.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=worker_env(prepared.url, args.redis_url, sandbox.url, tmp),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    worker = workers[0]
    try:
        meter = Meter(
            [w.pid for w in workers], sandbox.proc.pid, prepared.name, {poller.backend_pid}, redis
        )
        deadline = time.monotonic() + 120
        while not any(n for s, n in poller.counts().items() if s != "pending"):
            if any(w.poll() is not None for w in workers):
                raise RuntimeError(f"a worker exited; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no contact left pending in 120 s; see {log_path}")
            time.sleep(0.02)
        meter.start()
        if profile:
            spy_cmd = [py_spy() or "py-spy", "record", "--pid", str(worker.pid), "--format", "raw"]
            spy_cmd += ["-o", str(raw), "--rate", str(args.profile_rate), "--nonblocking"]
            if not args.profile_all_threads:
                spy_cmd.append("--gil")
            spy = subprocess.Popen(
                spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        last_done, last_progress, last_rss = -1, time.monotonic(), 0.0
        counts: Counter[str] = Counter()
        while True:
            time.sleep(0.2)
            counts = poller.counts()
            result.db_polls += 1
            for name, n in poller.waits().items():
                result.db_waits[name] = result.db_waits.get(name, 0) + n
            done = sum(counts[s] for s in TERMINAL)
            now = time.monotonic()
            meter.sample()
            if rss and now - last_rss >= 1.0:
                last_rss = now
                with contextlib.suppress(Exception):
                    rss_bytes = meter.worker.memory_info().rss
                    result.rss.append((now - meter.t0, done, rss_bytes))
            if done >= jobs:
                break
            if done != last_done:
                last_done, last_progress = done, now
            if any(w.poll() is not None for w in workers):
                result.error = f"a worker exited; see {log_path}"
                break
            if now - last_progress > args.stall_s:
                result.error = f"no progress for {args.stall_s} s at {dict(counts)}"
                break
        meter.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                _, err = spy.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                spy.kill()
                err = "timed out"
            if not raw.exists():
                print(f"  py-spy wrote no profile: {err.strip()[-500:]}", file=sys.stderr)
            else:
                result.profile = str(raw)
        if rss:
            with contextlib.suppress(Exception):
                status = Path(f"/proc/{worker.pid}/status").read_text()
                match = re.search(r"VmHWM:\s+(\d+) kB", status)
                result.rss_hwm = int(match.group(1)) * 1024 if match else None
        result.elapsed_poll_s = meter.result()["seconds"] or 0.0
        result.elapsed_s = poller.window() or result.elapsed_poll_s
        result.statuses = dict(sorted(counts.items()))
        result.cpu = meter.result()
        result.db_shared = meter.pg.shared() if meter.pg else {}
        stats = sandbox.control.stats()
        result.requests = int(stats["requests"])
        result.by_status = dict(stats.get("by_status") or {})
    finally:
        stop_process(spy, signal.SIGINT, 30)
        for w in workers:
            stop_process(w, signal.SIGTERM, 30)
        polls = poller.queries - polls0
        poller.close()
        shutil.rmtree(tmp, ignore_errors=True)
    time.sleep(0.5)  # backends flush their statistics as they exit
    with contextlib.suppress(Exception):
        result.xacts_per_job = (dbs.xacts(prepared.name) - xacts0 - polls) / jobs
    if not args.keep_db:
        dbs.drop(prepared.name)
    print("  " + row_text(result), flush=True)
    if args.phases:
        from phases import describe, summarise

        result.phases = summarise(phases_prefix, concurrency // processes)
        if result.phases:
            print(f"  phases: {describe(result.phases)}", flush=True)
    return result


# --- the raw ceiling: Celery threads + httpx, no database ------------------------------------


def raw_worker_main(argv: list[str]) -> None:
    """`throughput.py _raw-worker`: a Celery threads pool whose task makes a phone job's two
    provider calls (search, buy) with one shared httpx client, and nothing else."""
    parser = argparse.ArgumentParser(prog="throughput.py _raw-worker")
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
    cmd = [sys.executable, str(Path(__file__).resolve()), "_raw-worker"]
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
    print("  " + row_text(result), flush=True)
    return result


# --- in-process: SQL statements, transactions and pings per job ------------------------------


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
        spy_cmd = [py_spy() or "py-spy", "record", "--pid", str(os.getpid()), "--format", "raw"]
        spy_cmd += ["-o", str(raw), "--rate", str(args.profile_rate), "--nonblocking", "--gil"]
        spy = subprocess.Popen(
            spy_cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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


# --- profile summary -------------------------------------------------------------------------

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
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


def _frame(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match["func"], match["file"]


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


def summarise_profile(raw: Path, top: int) -> tuple[str, dict[str, Any]]:
    """Self time by package and by function, and inclusive time of selected frames, from
    py-spy's raw (collapsed) output."""
    self_pkg: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        frames = [f for f in frames if f[1] and not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        func, path = frames[-1]
        self_pkg[package_of(path)] += count
        short = path.split("site-packages/", 1)[-1].split("/work/main/", 1)[-1]
        self_fn[f"{func} ({short})"] += count
        for name in {
            f"{fn} ({p.split('site-packages/', 1)[-1].split('/work/main/', 1)[-1]})"
            for fn, p in frames
        }:
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
    lines += ["", "self time by package:"]
    lines += [f"  {pct(c):5.1f}%  {name}" for name, c in self_pkg.most_common()]
    lines += ["", f"top {top} functions by self time:"]
    lines += [f"  {pct(c):5.1f}%  {name}" for name, c in self_fn.most_common(top)]
    lines += ["", f"top {2 * top} functions by inclusive time:"]
    lines += [f"  {pct(c):5.1f}%  {name}" for name, c in incl_fn.most_common(2 * top)]
    data = {
        "samples": total,
        "stages": {k: pct(v) for k, v in stages.items()},
        "self_by_package": {k: pct(v) for k, v in self_pkg.most_common()},
        "self_by_function": {k: pct(v) for k, v in self_fn.most_common(3 * top)},
        "inclusive": {k: pct(v) for k, v in incl_fn.most_common(6 * top)},
    }
    return "\n".join(lines), data


# --- report ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row_text(r: RunResult) -> str:
    return (
        f"{r.label}: {r.jobs_per_s:.1f} jobs/s, {r.calls_per_job:.2f} calls/job, I/O bound "
        f"{r.io_bound:.0f}, CPU {r.cpu_total_ms:.2f} ms/job (worker {fmt(r.cpu_ms('worker'))}, "
        f"db {fmt(r.cpu_ms('db'))}, redis {fmt(r.cpu_ms('redis'))}), CPU bound "
        f"{r.cpu_bound:.0f}, ratio {r.ratio:.2f}, statuses {r.statuses}"
        + (f"  ERROR: {r.error}" if r.error else "")
    )


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def main_table(results: list[RunResult]) -> str:
    head = [
        "run",
        "C",
        "jobs/s",
        "calls/job",
        "I/O bound",
        "worker ms",
        "db ms",
        "redis ms",
        "CPU ms/job",
        "CPU bound",
        "ratio",
        "statuses",
    ]
    rows = [head]
    for r in results:
        rows.append(
            [
                r.label,
                str(r.concurrency),
                f"{r.jobs_per_s:.1f}",
                f"{r.calls_per_job:.2f}",
                f"{r.io_bound:.0f}",
                fmt(r.cpu_ms("worker")),
                fmt(r.cpu_ms("db")),
                fmt(r.cpu_ms("redis")),
                f"{r.cpu_total_ms:.2f}",
                f"{r.cpu_bound:.0f}",
                f"{r.ratio:.2f}",
                " ".join(f"{k}={v}" for k, v in r.statuses.items()),
            ]
        )
    return table(rows)


def context_table(results: list[RunResult]) -> str:
    head = [
        "run",
        "elapsed s",
        "xacts/job",
        "worker usr/sys ms",
        "worker cores",
        "db backends/shared ms",
        "sandbox ms",
        "bench ms",
        "machine busy",
        "others' load",
        "cores left",
        "ratio on cores left",
        "non-2xx",
    ]
    rows = [head]
    for r in results:
        secs = r.cpu.get("seconds") or 0.0
        busy = r.cpu.get("machine_busy")
        ours = sum(r.cpu.get(k) or 0.0 for k in ("worker", "db", "redis", "sandbox", "bench"))
        non2xx = {k: v for k, v in r.by_status.items() if not k.startswith("2")}
        rows.append(
            [
                r.label,
                f"{r.elapsed_s:.2f}",
                fmt(r.xacts_per_job),
                f"{fmt(r.cpu_ms('worker_user'))}/{fmt(r.cpu_ms('worker_system'))}",
                fmt((r.cpu.get("worker") or 0.0) / secs if secs else None),
                f"{fmt(r.cpu_ms('db_backends'))}/{fmt(r.cpu_ms('db_shared'))}",
                fmt(r.cpu_ms("sandbox")),
                fmt(r.cpu_ms("bench")),
                f"{busy / secs:.2f} cores" if busy is not None and secs else "-",
                f"{(busy - ours) / secs:.2f} cores" if busy is not None and secs else "-",
                fmt(r.cores_left),
                fmt(r.ratio_left),
                json.dumps(non2xx) if non2xx else "none",
            ]
        )
    return table(rows)


def rss_report(r: RunResult) -> tuple[str, dict[str, Any]]:
    if not r.rss:
        return "no RSS samples", {}
    warm_at = 0.1 * r.jobs
    warm = next(((t, d, b) for t, d, b in r.rss if d >= warm_at), r.rss[0])
    after = [s for s in r.rss if s[0] >= warm[0]]
    peak = max(after, key=lambda s: s[2])
    growth = 100 * (peak[2] - warm[2]) / warm[2]
    mib = lambda b: b / 2**20  # noqa: E731
    lines = [
        f"worker RSS, concurrency {r.concurrency}, {r.jobs} jobs at {r.latency_ms:g} ms latency "
        f"({r.jobs_per_s:.0f} jobs/s, {len(r.rss)} samples, one a second):",
        f"  after warm-up ({warm[1]} jobs done, {warm[0]:.0f} s): {mib(warm[2]):.1f} MiB",
        f"  peak after warm-up ({peak[1]} jobs done, {peak[0]:.0f} s): {mib(peak[2]):.1f} MiB",
        f"  growth: {growth:+.1f}% "
        + ("(flat: under 10%)" if growth < 10 else "(NOT flat: 10% or more)"),
        f"  final: {mib(r.rss[-1][2]):.1f} MiB"
        + (f"; lifetime high-water mark (VmHWM): {mib(r.rss_hwm):.1f} MiB" if r.rss_hwm else ""),
    ]
    marks = []
    for tenth in range(1, 11):
        sample = next((s for s in r.rss if s[1] >= tenth * r.jobs / 10), None)
        if sample:
            marks.append(f"{tenth * 10}%: {mib(sample[2]):.1f}")
    lines.append("  RSS (MiB) by jobs done: " + ", ".join(marks))
    data = {
        "warm_rss": warm[2],
        "peak_rss": peak[2],
        "growth_pct": growth,
        "final_rss": r.rss[-1][2],
        "hwm": r.rss_hwm,
    }
    return "\n".join(lines), data


def verdicts(results: list[RunResult]) -> list[str]:
    out = []
    for r in results:
        bad = {k: v for k, v in r.statuses.items() if k not in ("active", "done")}
        if bad or r.error:
            out.append(
                f"!!! {r.label}: NOT ALL JOBS SUCCEEDED: {r.statuses} {r.error or ''}".rstrip()
            )
    for r in results:
        if r.label.startswith("c"):
            out.append(
                f"{r.label}: ratio {r.ratio:.2f} of min(I/O {r.io_bound:.0f}, CPU "
                f"{r.cpu_bound:.0f}) -> target 0.8 {'met' if r.ratio >= 0.8 else 'NOT met'}"
            )
    return out


# --- main ------------------------------------------------------------------------------------


def main() -> int:
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
    args = parser.parse_args()

    import redis as redis_lib

    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    processes = [int(p) for p in args.processes.split(",") if p.strip()]
    countries = [c.strip().upper() for c in args.countries.split(",") if c.strip()]
    rss_countries = [c.strip().upper() for c in args.rss_countries.split(",") if c.strip()]
    if args.profile and py_spy() is None:
        print("py-spy not found (a dev dependency: install the venv)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    redis = redis_lib.Redis.from_url(args.redis_url)
    others = redis_users(redis)
    if others:
        print(
            f"{args.redis_url} is in use by {len(others)} other client(s) ({', '.join(others)}): "
            "the bench flushes it, and a worker of theirs would take our tasks (or we theirs). "
            "Pick a free database with --redis-url.",
            file=sys.stderr,
        )
        return 2
    redis.flushdb()
    dbs = Databases(args.database_url)
    sandbox: Sandbox | None = None
    results: list[RunResult] = []
    raws: list[RunResult] = []
    report: dict[str, Any] = {"command": sys.argv, "cores": os.cpu_count()}
    text: list[str] = []
    try:
        sandbox = Sandbox(OUT / f"sandbox-{stamp}.log")
        print(f"sandbox {sandbox.url} (pid {sandbox.proc.pid}); Redis {args.redis_url} flushed")
        for p in [] if args.skip_main else processes:
            for c in concurrencies:
                results.append(
                    run_worker(
                        args,
                        dbs,
                        sandbox,
                        redis,
                        label=f"c{c}" if p == 1 else f"c{c}-{p}p",
                        concurrency=c,
                        jobs=args.jobs,
                        latency_ms=args.latency_ms,
                        countries=countries,
                        stamp=stamp,
                        processes=p,
                    )
                )
        if args.raw:
            for c in concurrencies:
                raws.append(
                    run_raw(
                        args,
                        sandbox,
                        redis,
                        concurrency=c,
                        jobs=args.jobs,
                        latency_ms=args.latency_ms,
                        countries=countries,
                        stamp=stamp,
                    )
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
                jobs=args.jobs,
                latency_ms=args.latency_ms,
                countries=countries,
                stamp=stamp,
                profile=True,
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

        text.append("")
        text.append(
            f"Worker pipeline throughput: {args.jobs} phone contacts per run, sandbox latency "
            f"{args.latency_ms:g} ms, {os.cpu_count()} cores; CPU ms/job = worker + db + redis "
            f"(sandbox excluded)"
        )
        shown = results + raws + ([profiled] if profiled else [])
        if shown:
            text.append(main_table(shown))
            text.append("")
            text.append(
                "context (CPU ms per job unless stated; 'machine busy': all processes, in cores; "
                "'others' load': busy minus the parties of the bench, i.e. other people's work "
                "(other databases' backends included); "
                "'cores left': cores minus others' load, sandbox and bench)"
            )
            text.append(context_table(shown))
            text.append("")
            text += verdicts(shown)
        traced = [r for r in shown if r.phases]
        if traced:
            from phases import describe

            text.append("")
            text.append(
                "where a task's wall time goes (bench/phases.py; mean ms per phase, in order; "
                "'python' is the task's own code between two waits; slots busy: worker threads "
                "inside a task, averaged over the run):"
            )
            for r in traced:
                text.append(f"  {r.label}: {describe(r.phases)}")
        waited = [r for r in shown if r.db_waits and r.db_polls]
        if waited:
            text.append("")
            text.append(
                "PostgreSQL: the bench database's active backends per poll (5 a second), "
                "by what they wait on:"
            )
            for r in waited:
                top = sorted(r.db_waits.items(), key=lambda kv: -kv[1])[:5]
                text.append(
                    f"  {r.label}: " + ", ".join(f"{name} {n / r.db_polls:.1f}" for name, n in top)
                )
        if raws and results:
            text.append("")
            for r in results:
                raw = next((x for x in raws if x.concurrency == r.concurrency), None)
                if r.processes != 1:
                    continue
                if raw and raw.jobs_per_s:
                    text.append(
                        f"c{r.concurrency}: pipeline {r.jobs_per_s:.1f} jobs/s = "
                        f"{r.jobs_per_s / raw.jobs_per_s:.2f} of the raw ceiling "
                        f"{raw.jobs_per_s:.1f} jobs/s (raw worker {fmt(raw.cpu_ms('worker'))} "
                        f"CPU ms/job vs pipeline worker {fmt(r.cpu_ms('worker'))})"
                    )
        if profiled:
            text.append("")
            text.append(
                f"profile-c{profiled.concurrency} ran under py-spy ({args.profile_rate} Hz, "
                "--nonblocking): its figures are depressed by sampling"
            )
        if sql:
            text.append("")
            text.append(
                "in-process pipeline (no Celery, one contact at a time, no latency), per job: "
                + ", ".join(f"{k} {v:.2f}" for k, v in sql.items())
            )
        if rss_run:
            text.append("")
            rss_text, rss_data = rss_report(rss_run)
            text.append(rss_text)
            text += [v for v in verdicts([rss_run]) if v.startswith("!!!")]
            report["rss"] = rss_data
        inprocess = OUT / f"profile-{stamp}-inprocess.txt"
        if args.profile and inprocess.exists():
            summary, data = summarise_profile(inprocess, args.top)
            text.append("")
            text.append(
                f"profile of the in-process pipeline, no Celery ({inprocess.relative_to(ROOT)}):"
            )
            text.append(summary)
            report["profile_inprocess"] = data
        if profiled and profiled.profile:
            summary, data = summarise_profile(Path(profiled.profile), args.top)
            text.append("")
            text.append(f"profile of the worker ({Path(profiled.profile).relative_to(ROOT)}):")
            text.append(summary)
            report["profile"] = data
        print("\n".join(text))
        report.update(
            runs=[
                r.__dict__
                | {
                    "jobs_per_s": r.jobs_per_s,
                    "calls_per_job": r.calls_per_job,
                    "io_bound": r.io_bound,
                    "cpu_total_ms": r.cpu_total_ms,
                    "cpu_bound": r.cpu_bound,
                    "ratio": r.ratio,
                    "cores_left": r.cores_left,
                    "ratio_left": r.ratio_left,
                }
                for r in shown + ([rss_run] if rss_run else [])
            ],
            sql=sql,
            text="\n".join(text),
        )
        path = OUT / f"throughput-{stamp}.json"
        path.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nsaved {path.relative_to(ROOT)}")
        failed = any(
            r.error or set(r.statuses) - {"active", "done"}
            for r in shown + ([rss_run] if rss_run else [])
        )
        return 1 if failed else 0
    finally:
        if sandbox is not None:
            sandbox.stop()
        if not args.keep_db:
            dbs.drop_all()
        with contextlib.suppress(Exception):
            redis.flushdb()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_raw-worker":
        raw_worker_main(sys.argv[2:])
    else:
        sys.exit(main())
