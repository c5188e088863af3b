"""`PROVISIONER_ENV=production` through the real command line: every command that opens the
database, Redis or the providers exits 2 before doing anything, one line on stderr naming the
variable; the API's clients, the key maker and the probes still run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

CLI = [sys.executable, "-m", "worker.cli"]
# Nothing listens there: a command that gets past the check fails on the connection instead.
UNREACHABLE_PG = "postgresql://provisioner@127.0.0.1:1/provisioner"


def production_env(var_dir, **overrides: str | None) -> dict[str, str]:
    """A production environment the check lets through, changed by `overrides` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update({
        "PROVISIONER_ENV": "production",
        "PROVISIONER_VAR_DIR": str(var_dir),
        "PROVISIONER_DATABASE_URL": UNREACHABLE_PG,
        "PROVISIONER_REDIS_URL": "redis://127.0.0.1:1/0",
        "PROVISIONER_SECRET_KEYS": Fernet.generate_key().decode(),
        "PROVISIONER_TWILIO_ACCOUNT_SID": "AC" + "1f" * 16,
        "PROVISIONER_TWILIO_AUTH_TOKEN": "twilio-token",
        "PROVISIONER_GOOGLE_ACCESS_TOKEN": "google-token",
        "PROVISIONER_LOG_FORMAT": "console",
    })
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def assert_refused(done: subprocess.CompletedProcess[str], variable: str, var_dir) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("PROVISIONER_ENV=production refuses to start: ")
    assert variable in lines[0]
    # Refused before anything was made: no SQLite file, no embedded Redis, no key.
    assert not var_dir.exists() or not any(var_dir.iterdir())


@pytest.mark.parametrize(("variable", "value"), [
    ("PROVISIONER_DATABASE_URL", None),
    ("PROVISIONER_DATABASE_URL", "sqlite:////tmp/provisioner.db"),
    ("PROVISIONER_REDIS_URL", None),
    ("PROVISIONER_SECRET_KEYS", None),
    ("PROVISIONER_SANDBOX_URL", "http://sandbox:8900"),
    ("PROVISIONER_TWILIO_API_URL", "http://127.0.0.1:8900"),
    ("PROVISIONER_TWILIO_AUTH_TOKEN", None),
    ("PROVISIONER_GOOGLE_ACCESS_TOKEN", None),
    ("PROVISIONER_CONSOLE_TOKEN", "x" * 31),
])
def test_the_worker_refuses_each_development_default(tmp_path, variable, value):
    var_dir = tmp_path / "var"
    done = run(production_env(var_dir, **{variable: value}), "worker")
    assert_refused(done, variable, var_dir)


@pytest.mark.parametrize("command", [
    ["api"],
    ["beat"],
    ["migrate"],
    ["migrate", "--check"],
    ["accounts", "create", "--name", "Acme"],
    ["assistants", "create", "--account", "1"],
    ["credits", "add", "1", "10.00"],
    ["jobs", "failed"],
    ["jobs", "stuck"],
    ["jobs", "retry", "ct_x"],
    ["billing", "run"],
    ["webhooks", "redrive"],
    ["secrets", "rotate"],
])
def test_every_command_that_opens_the_database_refuses(tmp_path, command):
    var_dir = tmp_path / "var"
    done = run(production_env(var_dir, PROVISIONER_SECRET_KEYS=None), *command)
    assert_refused(done, "PROVISIONER_SECRET_KEYS", var_dir)


def test_a_complete_production_environment_gets_past_the_check(tmp_path):
    # The database is unreachable: `migrate --check` says so (1), it is not refused (2).
    done = run(production_env(tmp_path / "var"), "migrate", "--check")
    assert done.returncode == 1, done.stderr
    assert "database unreachable" in done.stdout


def test_the_dev_stack_will_not_run_in_production(tmp_path):
    done = run(production_env(tmp_path / "var"), "dev")
    assert done.returncode == 2
    assert "PROVISIONER_ENV=production" in done.stderr


def test_the_key_maker_and_the_probes_run_on_an_empty_production_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update({"PROVISIONER_ENV": "production", "PROVISIONER_VAR_DIR": str(tmp_path / "var")})
    key = run(env, "secrets", "new-key")
    assert key.returncode == 0, key.stderr
    Fernet(key.stdout.strip().encode())
    # No health file: not alive (1), but not refused either.
    assert run(env, "beat", "--check-alive").returncode == 1
    assert run(env, "worker", "--check-alive").returncode == 1
