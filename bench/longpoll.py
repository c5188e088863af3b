"""Live status figures: long-poll wake-up latency, the API's threads and memory with N waiters,
and SSE events per second to one client.

    .venv/bin/python bench/longpoll.py [--waiters 500] [--events 2000]
        [--database-url postgresql://postgres@127.0.0.1:5432/bench] [--redis-url redis://...]

Starts `provisioner api` as a process of its own (on loopback) over a fresh SQLite file and an
embedded Redis (or the URLs given), makes N pending contacts, opens one `?wait=60` long poll
on each, measures the API process (threads, RSS, open database connections), then commits N
transitions one at a time, each followed by the worker's PUBLISH, and times each answer from
the commit. Then it inserts events into the outbox and times one `/v0/events` client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from sqlalchemy import update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.domain.ids import new_id  # noqa: E402
from worker.embedded_redis import redis_url  # noqa: E402
from worker.live import Notifier  # noqa: E402
from worker.settings import Settings  # noqa: E402
from worker.store import accounts, credits  # noqa: E402
from worker.store.db import Database  # noqa: E402
from worker.store.migrate import upgrade  # noqa: E402
from worker.store.models import Contact, Event  # noqa: E402


class NoPublish:
    def provision(self, contact_id: str, *, queue: str) -> None:
        return None


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=settings.database_url,
        PROVISIONER_REDIS_URL=redis_url(settings),
        PROVISIONER_RATE_LIMIT="1000000/second",
        PROVISIONER_LOG_LEVEL="WARNING",
    )
    argv = [sys.executable, "-m", "worker.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the API did not start; see {log}")


def db_connections(proc: psutil.Process, settings: Settings) -> int:
    """Database connections the API process holds: sockets to PostgreSQL's port, or open
    handles of the SQLite file."""
    if settings.database_url.startswith("sqlite"):
        return sum(1 for f in proc.open_files() if f.path.endswith(".db"))
    return sum(1 for c in proc.net_connections("tcp") if c.raddr and c.raddr.port == 5432)


async def long_polls(
    base: str,
    key: str,
    cids: list[str],
    db: Database,
    notifier: Notifier,
    proc: psutil.Process,
    settings: Settings,
) -> dict[str, float]:
    arrived: dict[str, float] = {}
    limits = httpx.Limits(max_connections=len(cids) + 10, max_keepalive_connections=len(cids) + 10)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=90, headers={"Authorization": f"Bearer {key}"}
    ) as http:

        async def poll(assistant: int, cid: str) -> None:
            r = await http.get(f"/v0/assistant/{assistant}/contact/{cid}", params={"wait": 60})
            assert r.json()["info"]["status"] == "provisioning", r.text
            arrived[cid] = time.perf_counter()

        with db.read() as session:
            owners = {
                c.id: c.assistant_id for c in session.query(Contact).filter(Contact.id.in_(cids))
            }
        base_threads = proc.num_threads()
        tasks = [asyncio.create_task(poll(owners[c], c)) for c in cids]
        await asyncio.sleep(max(3.0, len(cids) / 100))
        figures = {
            "threads_idle_before": base_threads,
            "threads_with_waiters": proc.num_threads(),
            "rss_mib_with_waiters": proc.memory_info().rss / 2**20,
            "db_connections_with_waiters": db_connections(proc, settings),
            "waiting": sum(not t.done() for t in tasks),
        }
        latencies = []
        for cid in cids:
            with db.write() as session:
                session.execute(
                    update(Contact).where(Contact.id == cid).values(status="provisioning")
                )
            committed = time.perf_counter()
            notifier.changed(cid, None, None, "provisioning")
            while cid not in arrived:
                await asyncio.sleep(0.0005)
            latencies.append((arrived[cid] - committed) * 1000)
        await asyncio.gather(*tasks)
    figures.update(
        p50_ms=statistics.median(latencies), p99_ms=pct(latencies, 99), max_ms=max(latencies)
    )
    return figures


async def sse_rate(
    base: str, key: str, account_id: int, db: Database, notifier: Notifier, count: int
) -> float:
    received = 0
    done = asyncio.Event()
    async with httpx.AsyncClient(
        base_url=base, timeout=None, headers={"Authorization": f"Bearer {key}"}
    ) as http:

        async def read() -> None:
            nonlocal received
            async with http.stream("GET", "/v0/events") as r:
                async for line in r.aiter_lines():
                    if line.startswith("id:"):
                        received += 1
                        if received >= count:
                            done.set()
                            return

        reader = asyncio.create_task(read())
        await asyncio.sleep(1.0)
        payload = {
            "type": "contact.active",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"id": "ct_x", "status": "active", "request": {"a": "b" * 200}},
        }
        rows = [
            {
                "id": new_id("evt"),
                "account_id": account_id,
                "contact_id": "ct_x",
                "type": "contact.active",
                "payload": payload,
                "created_at": datetime.now(UTC),
            }
            for _ in range(count)
        ]
        started = time.perf_counter()
        with db.write() as session:
            session.execute(Event.__table__.insert(), rows)
        notifier.changed("ct_x", None, account_id, "active")
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - started
        reader.cancel()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waiters", type=int, default=500)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="bench-longpoll-"))
    settings = Settings(
        database_url=args.database_url or f"sqlite:///{var / 'bench.db'}",
        redis_url=args.redis_url,
        var_dir=var,
    )
    db = Database(settings.database_url)
    upgrade(db)
    with db.write() as session:
        account = accounts.create_account(session, "bench")
        key = accounts.issue_key(session, account.id)
        credits.top_up(session, account.id, 10_000_000, f"topup:bench:{account.id}")
        assistants = accounts.create_assistants(session, account.id, None, args.waiters)
        account_id = account.id
    from worker.app.contacts import ContactService

    service = ContactService(db, settings, NoPublish())
    body = b'{"contact_type": "phone", "phone_country": "US"}'
    cids = [
        service.submit(account_id, a, body, path=f"/v0/assistant/{a}/contact").body["info"]["id"]
        for a in assistants
    ]
    port = free_port()
    api = start_api(settings, port, var / "api.log")
    try:
        proc = psutil.Process(api.pid)
        notifier = Notifier.from_settings(settings)
        base = f"http://127.0.0.1:{port}"
        polls = asyncio.run(long_polls(base, key, cids, db, notifier, proc, settings))
        rate = asyncio.run(sse_rate(base, key, account_id, db, notifier, args.events))
    finally:
        api.terminate()
        api.wait(10)
    print(f"database: {settings.database_url.split(':')[0]}, waiters: {args.waiters}")
    print(
        f"API process while {polls['waiting']} long polls wait: "
        f"{polls['threads_with_waiters']} threads (idle before: {polls['threads_idle_before']}), "
        f"RSS {polls['rss_mib_with_waiters']:.0f} MiB, "
        f"database connections open: {polls['db_connections_with_waiters']}"
    )
    print(
        f"wake-up latency (commit -> answer), {args.waiters} transitions one at a time: "
        f"p50 {polls['p50_ms']:.1f} ms, p99 {polls['p99_ms']:.1f} ms, "
        f"max {polls['max_ms']:.1f} ms"
    )
    print(f"SSE: {args.events} events to one client at {rate:.0f} events/s")


if __name__ == "__main__":
    main()
