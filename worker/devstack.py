"""`make run`: the whole stack on one machine with embedded defaults, until Ctrl-C.

Embedded Redis and a SQLite file under var/, the provider sandbox in place of Twilio and
Google, and one process each of API, worker and beat. Seeds a demo account and prints its key.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import redis
from sqlalchemy import select

from worker.embedded_redis import redis_url
from worker.settings import Settings
from worker.store import accounts, credits
from worker.store.db import Database
from worker.store.migrate import upgrade
from worker.store.models import Account, Assistant

DEMO_NAME = "demo"
DEMO_CREDITS = Decimal("25.00")
DEMO_ASSISTANTS = 3


def seed(db: Database) -> tuple[int, str, list[int]]:
    """The demo account (made once) with a fresh API key (keys are shown only once)."""
    with db.write() as session:
        account = (
            session.execute(select(Account).where(Account.name == DEMO_NAME).order_by(Account.id))
            .scalars()
            .first()
        )
        if account is None:
            account = accounts.create_account(session, DEMO_NAME)
            credits.top_up(session, account.id, int(DEMO_CREDITS * 100), "topup:demo-seed")
            accounts.create_assistants(session, account.id, "demo assistant", DEMO_ASSISTANTS)
        api_key = accounts.issue_key(session, account.id)
        ids = (
            session.execute(
                select(Assistant.id)
                .where(Assistant.account_id == account.id)
                .order_by(Assistant.id)
            )
            .scalars()
            .all()
        )
    return account.id, api_key, list(ids)


def demo_webhook(db: Database, account_id: int, sandbox_url: str) -> tuple[str, str]:
    """The demo account's webhook endpoint (the sandbox's `demo` sink unless set) and secret."""
    from datetime import UTC, datetime

    from worker.domain.webhooks import new_secret
    from worker.store import webhooks

    with db.write() as session:
        endpoint = webhooks.get_endpoint(session, account_id)
        if endpoint is None:
            url = f"{sandbox_url}/_sandbox/sink/demo"
            endpoint, _ = webhooks.set_endpoint(
                session, account_id, url, new_secret(), datetime.now(UTC)
            )
        return endpoint.url, endpoint.secret


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a component exited during start-up; see its output above")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def main() -> None:
    base = Settings()
    sandbox_url = f"http://127.0.0.1:{base.sandbox_port}"
    env = {
        **os.environ,
        "PROVISIONER_REDIS_URL": redis_url(base),
        "PROVISIONER_DATABASE_URL": base.database_url,
        "PROVISIONER_SANDBOX_URL": sandbox_url,
        "PROVISIONER_TWILIO_AUTH_TOKEN": "sandbox",
        "PROVISIONER_GOOGLE_ACCESS_TOKEN": "sandbox",
        "PROVISIONER_WEBHOOK_ALLOW_PRIVATE": "true",
        "PROVISIONER_LOG_FORMAT": os.environ.get("PROVISIONER_LOG_FORMAT", "console"),
    }
    db = Database(base.database_url, pool_size=2)
    upgrade(db)
    account_id, api_key, assistant_ids = seed(db)
    webhook_url, webhook_secret = demo_webhook(db, account_id, sandbox_url)
    db.dispose()

    cli = [sys.executable, "-m", "worker.cli"]
    commands = {
        "sandbox": [*cli, "sandbox", "--port", str(base.sandbox_port)],
        "api": [*cli, "api", "--host", base.api_host, "--port", str(base.api_port)],
        "worker": [*cli, "worker", "--concurrency", "8"],
        "beat": [*cli, "beat"],
    }
    procs = [
        subprocess.Popen(cmd, env=env, start_new_session=True)  # noqa: S603 - our own argv
        for cmd in commands.values()
    ]

    def stop(*_: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if not base.redis_url:  # the embedded Redis (its data is in var/, append-only)
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(env["PROVISIONER_REDIS_URL"]).shutdown()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        api = f"http://{base.api_host}:{base.api_port}"
        _wait_ready(f"{sandbox_url}/_sandbox/stats", procs)
        _wait_ready(f"{api}/readyz", procs)
        print(f"Sandbox: {sandbox_url}", flush=True)
        print(f"Webhooks: {webhook_url} (GET it to see deliveries)", flush=True)
        print(f"Webhook secret: {webhook_secret}", flush=True)
        print(f"API: {api}", flush=True)
        print(f"API key: {api_key}", flush=True)
        print(f"Account id: {account_id}", flush=True)
        print(f"Assistant ids: {' '.join(map(str, assistant_ids))}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        raise SystemExit("a component exited; stopping the stack")
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
