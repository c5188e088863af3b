"""Schema migrations (Alembic), run by `provisioner migrate` and by the test harness."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import OperationalError

from worker.store.db import Database

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run on every start and from several hosts."""
    config = alembic_config(db.url)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands against this version's migrations."""

    ready: bool
    current: tuple[str, ...]
    head: tuple[str, ...]
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"ready": self.ready, "current": list(self.current), "head": list(self.head)}


def schema_state(db: Database) -> SchemaState:
    """Is the schema at this version's head? Also ready when the database is at a revision
    this version does not know: a newer release migrated it, and releases read each other's
    schema (an image rolled back must still start). Not ready: no schema, or an older one."""
    script = ScriptDirectory.from_config(alembic_config(db.url))
    head = tuple(sorted(script.get_heads()))
    try:
        with db.engine.connect() as connection:
            current = tuple(sorted(MigrationContext.configure(connection).get_current_heads()))
    except OperationalError as exc:
        return SchemaState(False, (), head, f"database unreachable: {type(exc.orig).__name__}")
    if current == head:
        return SchemaState(True, current, head, f"schema at head {', '.join(head)}")
    if not current:
        return SchemaState(False, current, head, "no schema yet: `provisioner migrate` makes it")
    known = {rev.revision for rev in script.walk_revisions()}
    if not set(current) & known:
        return SchemaState(
            True, current, head, f"schema at {', '.join(current)}, newer than this version's head"
        )
    return SchemaState(
        False, current, head, f"schema at {', '.join(current)}, head is {', '.join(head)}"
    )


def wait_for_head(db: Database, wait_s: float, every_s: float = 2.0) -> SchemaState:
    """`schema_state`, asked again every `every_s` until ready or `wait_s` have passed."""
    deadline = time.monotonic() + wait_s
    while True:
        state = schema_state(db)
        if state.ready or time.monotonic() + every_s > deadline:
            return state
        time.sleep(every_s)
