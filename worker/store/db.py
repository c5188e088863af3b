"""Engines and transactions for SQLite and PostgreSQL, with the pragmas each needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from worker import tracing

SQLITE_BUSY_TIMEOUT_MS = 10_000


def _json_dumps(value: Any) -> str:
    """JSON columns' serializer: orjson, several times the standard library's speed; every
    step, event and contact writes some. Keys that are not strings become strings, as with
    `json.dumps`."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


JSON_OPTIONS: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=pool_size,
        **JSON_OPTIONS,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, issue BEGIN, so the write engine can say IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    # A transaction that reads then writes gets SQLITE_BUSY at once under concurrent writers,
    # whatever the busy timeout; taking the write lock at BEGIN makes it wait instead.
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


class Database:
    """The store's connection: `write()` and `read()` transactions as context managers."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        pre_ping: bool = True,
        lock_timeout_ms: int = 0,
        idle_in_transaction_timeout_ms: int = 0,
    ) -> None:
        """`pre_ping=False` saves a round trip per transaction where a dead connection is
        already survivable (the worker: its lease expires and the reconciler re-runs the
        contact); connections are then recycled every few minutes instead.

        PostgreSQL: `lock_timeout_ms` bounds how long any statement waits for a lock, and
        `idle_in_transaction_timeout_ms` how long a session may sit idle inside a
        transaction before the server ends it (freeing its locks); 0 is no bound. The
        worker's (and so beat's tasks') pool sets both: a runner frozen inside a transaction
        (SIGSTOP, a long pause) cannot hold a contact's row against the liveness takeover."""
        url = normalise_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, immediate=True, pool_size=pool_size)
            self._read_engine = _sqlite_engine(url, immediate=False, pool_size=pool_size)
        else:
            options = " ".join(
                f"-c {name}={value}"
                for name, value in (
                    ("lock_timeout", lock_timeout_ms),
                    ("idle_in_transaction_session_timeout", idle_in_transaction_timeout_ms),
                )
                if value
            )
            self.engine = create_engine(
                url,
                connect_args={"options": options} if options else {},
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=pre_ping,
                pool_recycle=300,
                **JSON_OPTIONS,
            )
            self._read_engine = self.engine
        for engine in {self.engine, self._read_engine}:
            tracing.instrument_engine(engine)  # statement spans, when tracing is on
        # Shares the write engine's pool; each checkout is put in autocommit and reset on return.
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that may write; commits on success, rolls back on any exception."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection on which every statement commits on its own, as it completes.

        For work that is one statement (see `contacts.accept_together`): its locks are
        released by the server's own commit, with no round trip back to Python in between.
        """
        with self._autocommit_engine.connect() as connection:
            yield connection

    @contextmanager
    def peek(self) -> Iterator[Connection]:
        """A connection for a read that needs no transaction of its own (one statement, one
        round trip): autocommit on PostgreSQL, the read engine on SQLite."""
        engine = self._read_engine if self.is_sqlite else self._autocommit_engine
        with engine.connect() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()
        if self._read_engine is not self.engine:
            self._read_engine.dispose()


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain `postgresql://` URLs (SQLAlchemy's default is psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url
