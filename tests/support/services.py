"""Real services for tests: Redis (given or embedded), a database (given PostgreSQL or SQLite)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from worker.embedded_redis import ensure_embedded
from worker.settings import Settings
from worker.store.db import Database, normalise_url
from worker.store.migrate import upgrade
from worker.store.models import Base

TEST_DATABASE_URL = os.environ.get("PROVISIONER_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("PROVISIONER_TEST_REDIS_URL", "")
IN_CI = bool(os.environ.get("CI"))


def clean_environment() -> None:
    """A developer's PROVISIONER_* variables must never leak into a test's Settings."""
    for name in list(os.environ):
        if name.startswith("PROVISIONER_") and not name.startswith("PROVISIONER_TEST_"):
            del os.environ[name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisService:
    def __init__(self, var_dir: Path) -> None:
        self.url = TEST_REDIS_URL or ensure_embedded(var_dir)
        self.client = redis.Redis.from_url(self.url)
        self.client.ping()

    def flush(self) -> None:
        self.client.flushdb()

    def close(self) -> None:
        if not TEST_REDIS_URL:  # the embedded server is ours to stop
            try:
                self.client.shutdown(nosave=True)
            except redis.ConnectionError:
                pass  # it closes the connection as it exits


class DatabaseService:
    """One migrated database per test session; each test gets it clean.

    PostgreSQL: a database of our own is created (and dropped at the end) on the server given,
    and tables are truncated between tests. SQLite: a migrated template file is copied.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.postgres = bool(TEST_DATABASE_URL)
        if self.postgres:
            admin_url = make_url(normalise_url(TEST_DATABASE_URL))
            self.name = f"cp_test_{uuid.uuid4().hex[:10]}"
            self._admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            self.url = admin_url.set(database=self.name).render_as_string(hide_password=False)
            db = Database(self.url, pool_size=2)
            upgrade(db)
            db.dispose()
        else:
            self.template = tmp / "template.db"
            db = Database(f"sqlite:///{self.template}", pool_size=1)
            upgrade(db)
            db.dispose()

    def fresh_url(self, test_dir: Path) -> str:
        if self.postgres:
            tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
            engine = create_engine(self.url)
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            engine.dispose()
            return self.url
        path = test_dir / "test.db"
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"

    def close(self) -> None:
        if self.postgres:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self._admin.dispose()


@contextmanager
def serve_in_thread(app: object) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread; yield its URL."""
    import uvicorn

    port = free_port()
    # As `provisioner api` serves (settings.api_keep_alive_s): clients' pooled connections
    # outlive httpx's 5 s expiry without a reset.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            timeout_keep_alive=75)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test API server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess (worker, beat, CLI) build these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    for name, value in settings.model_dump().items():
        if value is None or name in ("twilio_api_url", "twilio_messaging_url",
                                     "google_directory_url"):
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, tuple):
            value = ",".join(map(str, value))
        elif isinstance(value, dict):
            value = json.dumps(value)
        env[f"PROVISIONER_{name.upper()}"] = str(value)
    return env


# httpx's pool keeps an idle connection 5 s; a server that closes sooner, or at the same
# moment, resets the request that reuses it (ECONNRESET).
CLIENT_POOL_EXPIRY_S = 5.0


def idle_connection_is_kept(url: str, path: str, idle_s: float = CLIENT_POOL_EXPIRY_S + 1) -> bool:
    """Whether the server at `url` still answers on the same connection after `idle_s` idle."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
        first = connection.sock
        time.sleep(idle_s)
        try:
            connection.request("GET", path)
            connection.getresponse().read()
        except (ConnectionError, http.client.RemoteDisconnected):
            return False
        return connection.sock is first
    finally:
        connection.close()
