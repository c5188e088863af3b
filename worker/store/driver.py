"""The worker's hot statements on PostgreSQL: compiled by SQLAlchemy once, run on the driver.

Every execution through `Connection.execute` pays SQLAlchemy's execution context: the
compiled cache's lookup, the parameters rebuilt, a result object with its metadata read again
from the cursor. On a phone job's few statements that was most of the worker's database CPU
(docs/benchmarks.md). Here each statement is compiled once, with SQLAlchemy's own compiler for
the connection's dialect; its SQL, its constant parameters and its types' bind and result
processors (UTC datetimes, JSON) are kept; and each execution is one psycopg `execute` on the
transaction's own DBAPI connection, in that transaction. The statements stay Core statements,
written once: on SQLite, and for any statement this cannot run as it is (an expanding or
post-compile parameter), `rows` runs them through SQLAlchemy as before.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Plan:
    statement: Any  # the Core statement, held so that its id() is never reused
    sql: str
    constants: dict[str, Any]  # every bind parameter: its own value (None for the caller's)
    binds: tuple[tuple[str, Processor], ...]  # the parameters' type processors, by name
    row: type | None  # a named tuple of the returned columns; None for no rows
    results: tuple[tuple[int, Processor], ...]  # processors of returned columns, by position


_plans: dict[tuple[int, str], _Plan | None] = {}
_lock = threading.Lock()


def _plan(statement: Any, connection: Connection) -> _Plan | None:
    dialect = connection.dialect
    key = (id(statement), dialect.name)
    plan = _plans.get(key)
    if plan is not None and plan.statement is statement:
        return plan
    if key in _plans and plan is None:
        return None
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    made: _Plan | None = None
    if not (compiled.post_compile_params or compiled.literal_execute_params):
        columns = [c[0] for c in compiled._result_columns]
        made = _Plan(
            statement,
            compiled.string,
            compiled.construct_params(_check=False),
            tuple(compiled._bind_processors.items()),
            namedtuple("Row", columns, rename=True) if columns else None,  # type: ignore[misc]
            tuple(
                (i, fn)
                for i, c in enumerate(compiled._result_columns)
                if (fn := c[3]._cached_result_processor(dialect, None)) is not None
            ),
        )
    with _lock:
        _plans[key] = made
    return made


def _params(plan: _Plan, params: dict[str, Any]) -> dict[str, Any]:
    values = {**plan.constants, **params}
    for name, fn in plan.binds:
        values[name] = fn(values[name])
    return values


def _rows(plan: _Plan, raw: Sequence[Any]) -> list[Any]:
    assert plan.row is not None
    if not plan.results:
        return [plan.row._make(r) for r in raw]
    made = []
    for r in raw:
        values = list(r)
        for i, fn in plan.results:
            values[i] = fn(values[i])
        made.append(plan.row._make(values))
    return made


def rows(connection: Connection, statement: Any, params: dict[str, Any]) -> list[Any]:
    """Run `statement` in the connection's transaction: the rows it returns, each with its
    columns as attributes and `_asdict()` (as SQLAlchemy's rows have)."""
    plan = _plan(statement, connection) if connection.dialect.name == "postgresql" else None
    if plan is None:
        result = connection.execute(statement, params)
        return list(result) if result.returns_rows else []
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(plan.sql, _params(plan, params))
        return _rows(plan, cursor.fetchall()) if plan.row is not None else []
    finally:
        cursor.close()


def count(connection: Connection, statement: Any, params: dict[str, Any]) -> int:
    """Run an UPDATE or DELETE without RETURNING: the number of rows it matched."""
    plan = _plan(statement, connection) if connection.dialect.name == "postgresql" else None
    if plan is None:
        return int(connection.execute(statement, params).rowcount)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(plan.sql, _params(plan, params))
        return int(cursor.rowcount)
    finally:
        cursor.close()


class CheckViolated(Exception):
    """`commit_with` found a CHECK constraint (`constraint`) refusing its statement: the
    transaction committed nothing and is to be rolled back."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(f"check constraint {constraint} refused the statement")
        self.constraint = constraint


_SQLITE_CHECK = "CHECK constraint failed: "


def commit_with(connection: Connection, statement: Any, params: dict[str, Any]) -> None:
    """Run an UPDATE or DELETE and COMMIT the transaction in the same round trip.

    psycopg's pipeline sends both at once, so the row locks the statement takes are released
    by the server's commit with no trip back to Python in between (a thread of a busy worker
    can wait milliseconds for the GIL before it sends the next statement; a row every
    transaction updates is locked for all that time). The session's own commit afterwards
    finds no transaction and sends nothing. A CHECK constraint that refuses the statement
    raises `CheckViolated`; nothing is committed. On SQLite the statement runs in the
    transaction as usual (a CHECK refusing it raises `CheckViolated` too) and the session's
    commit commits it.
    """
    plan = _plan(statement, connection) if connection.dialect.name == "postgresql" else None
    if plan is None:
        try:
            connection.execute(statement, params)
        except IntegrityError as exc:  # SQLite: "CHECK constraint failed: <name>"
            message = str(exc.orig)
            if message.startswith(_SQLITE_CHECK):
                raise CheckViolated(message.removeprefix(_SQLITE_CHECK)) from exc
            raise
        return
    dbapi = connection.connection.dbapi_connection
    try:
        with dbapi.pipeline(), dbapi.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(plan.sql, _params(plan, params))
            dbapi.commit()  # type: ignore[union-attr]
    except psycopg.errors.CheckViolation as exc:
        raise CheckViolated(exc.diag.constraint_name) from exc
