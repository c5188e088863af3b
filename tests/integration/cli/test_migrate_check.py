"""`provisioner migrate --check`: what the Deployments' init container waits on. Not ready on
an empty or older schema, ready at head, and ready on a schema newer than this version (an
image rolled back still starts); `--wait` returns as soon as a migration lands."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

from sqlalchemy import text

from worker.store.db import Database
from worker.store.migrate import upgrade

CLI = [sys.executable, "-m", "worker.cli"]


def env_for(url: str, var_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update({"PROVISIONER_DATABASE_URL": url, "PROVISIONER_VAR_DIR": str(var_dir),
                "PROVISIONER_LOG_FORMAT": "console"})
    return env


def check(env, *args: str) -> tuple[int, dict]:
    done = subprocess.run([*CLI, "migrate", "--check", "--json", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout)


def head() -> str:
    from alembic.script import ScriptDirectory

    from worker.store.migrate import alembic_config

    (only,) = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    return only


def test_check_is_not_ready_until_the_schema_is_at_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    env = env_for(url, tmp_path / "var")
    code, state = check(env)
    assert (code, state["ready"], state["current"]) == (1, False, [])

    db = Database(url)
    try:
        upgrade(db, "0012")
        code, state = check(env)
        assert (code, state["current"], state["head"]) == (1, ["0012"], [head()])

        upgrade(db)
        code, state = check(env)
        assert (code, state["ready"], state["current"]) == (0, True, [head()])

        # A newer release's migration, unknown to this version: ready (a rollback starts).
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        code, state = check(env)
        assert (code, state["ready"], state["current"]) == (0, True, ["9999"])
    finally:
        db.dispose()


def test_check_with_wait_returns_once_the_migration_job_has_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    env = env_for(url, tmp_path / "var")
    waiting = subprocess.Popen([*CLI, "migrate", "--check", "--wait", "60"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Without a schema it keeps waiting (a plain --check would have answered 1 by now).
        with contextlib.suppress(subprocess.TimeoutExpired):
            waiting.wait(6)
        assert waiting.returncode is None, waiting.stderr.read()
        migrated = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, text=True,
                                  timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert out.startswith("schema at head")
