"""The stack a bench runs against, started and stopped by the bench itself.

Shared by `enqueue.py`, `throughput.py` and `bulk.py` (and the modules `throughput.py` is
split into): PostgreSQL databases of the bench's own (`Databases`, `seed`, `Poller`), the Redis
database it flushes (`claim_redis`), and the processes: the provider sandbox (`Sandbox`),
`provisioner api` (`start_api`) and `provisioner worker` (`start_workers`), with the
environment they get (`provisioner_env`, `worker_env`).

The scripts run as `python bench/X.py`, so this directory is on sys.path and `import stack`
works from any of them; importing it also puts the repository root on sys.path, for `worker`
and `sandbox`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

VENV_BIN = Path(sys.executable).parent
TWILIO_SID = "AC00000000000000000000000000000000"  # Settings' default account SID
CANDIDATES = 20  # numbers each find_number search asks for (worker.runtime.steps.CANDIDATES)
TERMINAL = ("active", "failed")


# --- processes -------------------------------------------------------------------------------


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


def wait_http(url: str, proc: subprocess.Popen[Any], what: str, log: str, timeout: float = 30):
    """Until `url` answers 2xx; raises if `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start in {timeout:g} s; see {log}") from None
            time.sleep(0.05)


def provisioner_env(url: str, redis_url: str, var_dir: str, **settings: str) -> dict[str, str]:
    """This process's environment without its PROVISIONER_* variables, plus the bench's:
    `rate_limit="..."` becomes PROVISIONER_RATE_LIMIT, and so on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=url,
        PROVISIONER_REDIS_URL=redis_url,
        PROVISIONER_LOG_LEVEL="WARNING",
        PROVISIONER_VAR_DIR=var_dir,
    )
    env.update({f"PROVISIONER_{name.upper()}": value for name, value in settings.items()})
    return env


def worker_env(url: str, redis_url: str, sandbox_url: str, var_dir: str) -> dict[str, str]:
    return provisioner_env(
        url,
        redis_url,
        var_dir,
        sandbox_url=sandbox_url,
        twilio_auth_token="x",
        google_access_token="x",
    )


def start_api(
    env: dict[str, str], log: IO[Any], extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """`provisioner api` on a free port, its output to `log`; returns once /healthz answers."""
    port = free_port()
    proc = subprocess.Popen(
        [*provisioner_cmd(), "api", "--host", "127.0.0.1", "--port", str(port), *extra],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc, "the API", log.name)
    except BaseException:
        stop_process(proc, signal.SIGINT, 15)
        raise
    return proc, url


def start_workers(
    env: dict[str, str],
    log: IO[Any],
    *,
    processes: int,
    concurrency: int,
    queues: str,
    phases: Path | None = None,
) -> list[subprocess.Popen[bytes]]:
    """`processes` x `provisioner worker`, sharing `concurrency` threads; with `phases`, each
    started through bench/phases.py's probes, writing to that prefix."""
    cmd = [*provisioner_cmd(), "worker"]
    if phases is not None:
        cmd = [sys.executable, str(Path(__file__).with_name("phases.py")), str(phases), "worker"]
    cmd += ["--concurrency", str(concurrency // processes), "--queues", queues]
    return [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(processes)
    ]


# --- Redis -----------------------------------------------------------------------------------


def redis_users(client: Any) -> list[str]:
    """Other clients connected to the same Redis database (another bench, a worker)."""
    me = client.client_id()
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return [
        f"{c.get('addr')} {c.get('cmd')}"
        for c in client.client_list()
        if int(c.get("db", -1)) == int(db) and int(c.get("id", -1)) != me
    ]


def claim_redis(url: str, *, force: bool = False, hint: str = "") -> Any | None:
    """A client of the Redis database the bench flushes, or None (said on stderr) if another
    client uses it: their worker would take our tasks, or ours theirs, and a flush wrecks both."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(url)
    others = redis_users(client)
    if others and not force:
        print(
            f"{url} is in use by {len(others)} other client(s) ({', '.join(others)}): "
            "the bench flushes it, and a worker of theirs would take our tasks (or we theirs). "
            f"Pick a free database with --redis-url{hint}.",
            file=sys.stderr,
        )
        client.close()
        return None
    return client


# --- PostgreSQL ------------------------------------------------------------------------------


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

    def create(self, label: str = "") -> tuple[str, str]:
        """A new empty database, `cp_bench_<token>[_<label>]`: its name and URL."""
        from sqlalchemy import text

        name = f"cp_bench_{self.token}_{label}" if label else f"cp_bench_{self.token}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return name, self.server.set(database=name).render_as_string(hide_password=False)

    def _stat(self, name: str, expression: str) -> int:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            value = conn.execute(
                text(f"SELECT {expression} FROM pg_stat_database WHERE datname = :n"), {"n": name}
            ).scalar_one()
        return int(value)

    def xacts(self, name: str) -> int:
        """Transactions committed and rolled back in the database so far."""
        return self._stat(name, "xact_commit + xact_rollback")

    def commits(self, name: str) -> int:
        return self._stat(name, "xact_commit")

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
class Seeded:
    name: str
    url: str
    account_id: int
    api_key: str
    assistant_ids: list[int]


def seed(
    dbs: Databases,
    label: str,
    assistants: int,
    *,
    assistant_name: str | None = "bench",
    analyze: bool = False,
) -> Seeded:
    """A new migrated database with one account (an API key, credits to spare) and
    `assistants` assistants; with `analyze`, planner statistics as a live database has them."""
    from worker.store import accounts, credits
    from worker.store.db import Database
    from worker.store.migrate import upgrade

    name, url = dbs.create(label)
    db = Database(url, pool_size=2)
    try:
        upgrade(db)
        with db.write() as session:
            account = accounts.create_account(session, "bench")
            key = accounts.issue_key(session, account.id)
            credits.top_up(session, account.id, 10**12, f"topup:bench:{account.id}")
            ids = accounts.create_assistants(session, account.id, assistant_name, assistants)
        if analyze:
            with db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    finally:
        db.dispose()
    return Seeded(name, url, account.id, key, ids)


def connect(url: str) -> Any:
    """A psycopg connection in autocommit to the database of a SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        autocommit=True,
    )


class Writes:
    """What a database wrote: rows per table (inserted, updated, of those HOT, deleted), the
    table's index count, and the cluster's WAL (records, full-page images, bytes). Take one
    snapshot before a run and one after its backends exit (they flush statistics as they go);
    `per_job` gives the difference. The WAL is the cluster's: nothing else may write meanwhile.
    """

    TABLES = (
        "SELECT t.relname, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_del, "
        "(SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid) "
        "FROM pg_stat_user_tables t"
    )
    WAL = "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"

    def __init__(self, url: str) -> None:
        with connect(url) as conn:
            self.tables = {
                str(name): tuple(int(v) for v in rest)
                for name, *rest in conn.execute(self.TABLES).fetchall()
            }
            row = conn.execute(self.WAL).fetchone()
            assert row is not None
            self.wal = tuple(int(v) for v in row)

    def per_job(self, before: Writes, jobs: int) -> dict[str, Any]:
        """Per job since `before`: {"wal": {records, fpi, bytes}, "tables": {name: {ins, upd,
        hot, del, indexes, index_rows}}}; index_rows (an upper bound: a partial index may take
        fewer) is ins + non-HOT upd, times the table's indexes."""
        n = max(jobs, 1)
        spent = (a - b for a, b in zip(self.wal, before.wal, strict=True))
        wal = dict(zip(("records", "fpi", "bytes"), spent, strict=True))
        tables: dict[str, dict[str, float]] = {}
        for name, now in self.tables.items():
            was = before.tables.get(name, (0, 0, 0, 0, now[4]))
            ins, upd, hot, dele = (now[i] - was[i] for i in range(4))
            if ins or upd or dele:
                tables[name] = {
                    "ins": ins / n,
                    "upd": upd / n,
                    "hot": hot / n,
                    "del": dele / n,
                    "indexes": now[4],
                    "index_rows": (ins + upd - hot) * now[4] / n,
                }
        return {"wal": {k: v / n for k, v in wal.items()}, "tables": tables}


def describe_writes(writes: dict[str, Any]) -> list[str]:
    """Writes.per_job's figures as lines: the WAL, then a table per line, most written first."""
    wal, tables = writes["wal"], writes["tables"]
    rows = sum(t["ins"] + t["upd"] + t["del"] for t in tables.values())
    index_rows = sum(t["index_rows"] for t in tables.values())
    lines = [
        f"WAL {wal['records']:.1f} records ({wal['fpi']:.1f} full pages), "
        f"{wal['bytes'] / 1024:.1f} KiB; rows written {rows:.2f}, index entries <= "
        f"{index_rows:.1f}"
    ]
    for name, t in sorted(tables.items(), key=lambda kv: -(kv[1]["index_rows"] + kv[1]["ins"])):
        lines.append(
            f"  {name}: ins {t['ins']:.2f}, upd {t['upd']:.2f} (HOT {t['hot']:.2f}), "
            f"del {t['del']:.2f}; {t['indexes']} indexes -> <= {t['index_rows']:.1f} entries"
        )
    return lines


class Poller:
    """Reads status counts from the bench database on one autocommit connection."""

    def __init__(self, url: str) -> None:
        self.conn = connect(url)
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

    def terminal(self) -> int:
        counts = self.counts()
        return sum(counts[s] for s in TERMINAL)

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


# --- the provider sandbox --------------------------------------------------------------------


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
        wait_http(self.url + "/_sandbox/stats", self.proc, "the sandbox", str(log))
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
