"""`provisioner dev` (`make run`): the whole stack on one machine with embedded defaults.

Embedded Redis and a SQLite file under var/, the provider sandbox in place of Twilio and
Google, and one process each of API, worker and beat, their log lines interleaved on this
terminal with each child's name in front. Seeds a demo account once (later runs reuse it and
its key), prints how to use it, and on Ctrl-C or SIGTERM stops every child's process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import redis
from sqlalchemy import select

from worker.embedded_redis import redis_url
from worker.settings import Settings
from worker.store import accounts, credits
from worker.store.db import Database
from worker.store.migrate import upgrade
from worker.store.models import LIVE_WHERE, Account, Assistant, Contact

DEMO_NAME = "demo"
DEMO_CREDITS_CENTS = 2500
DEMO_ASSISTANTS = 3
DEMO_KEY_FILE = "demo-api-key"  # under var/: the demo key, so a second run prints the same one
DEV_WORKER_METRICS_PORT = 8901  # unless PROVISIONER_WORKER_METRICS_PORT says otherwise
CONTACT_TYPES = ("phone", "email", "whatsapp")
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Demo:
    account_id: int
    api_key: str
    assistant_ids: list[int]
    free: dict[str, int]  # contact type -> an assistant with no live contact of that type


def dev_console_token(var_dir: Path) -> str:
    """The dev stack's console token: made once, kept in var/ so a bookmarked link works."""
    path = var_dir / "console-token"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    var_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def seed(db: Database, var_dir: Path) -> Demo:
    """The demo account, made once with credits and a few assistants, and reused after.

    Its API key is kept in var/ (the database holds only its hash) so that every run prints
    the same key. Credits are topped back up to the opening amount when they run low, and
    each contact type gets an assistant that can still take one (made if none can).
    """
    key_file = var_dir / DEMO_KEY_FILE
    with db.write() as session:
        account = (
            session.execute(select(Account).where(Account.name == DEMO_NAME).order_by(Account.id))
            .scalars()
            .first()
        )
        if account is None:
            account = accounts.create_account(session, DEMO_NAME)
            accounts.create_assistants(session, account.id, "demo assistant", DEMO_ASSISTANTS)
        api_key = key_file.read_text().strip() if key_file.exists() else ""
        if not api_key or accounts.account_for_key(session, api_key) != account.id:
            api_key = accounts.issue_key(session, account.id)
            key_file.touch(mode=0o600)
            key_file.write_text(api_key + "\n")
        available = credits.balance(session, account.id).available_cents
        if available < DEMO_CREDITS_CENTS:
            topup_key = f"topup:demo:{time.time_ns()}"
            credits.top_up(session, account.id, DEMO_CREDITS_CENTS - available, topup_key)
        ids = list(
            session.execute(
                select(Assistant.id)
                .where(Assistant.account_id == account.id)
                .order_by(Assistant.id)
            ).scalars()
        )
        taken = set(
            session.execute(
                select(Contact.contact_type, Contact.assistant_id).where(
                    Contact.account_id == account.id, LIVE_WHERE
                )
            ).tuples()
        )
        free: dict[str, int] = {}
        for contact_type in CONTACT_TYPES:
            candidates = [a for a in ids if (contact_type, a) not in taken]
            if not candidates:
                candidates = accounts.create_assistants(session, account.id, "demo assistant", 1)
                ids += candidates
            free[contact_type] = candidates[0]
    return Demo(account.id, api_key, ids, free)


def curl_lines(api: str, demo: Demo) -> list[str]:
    """One copy-paste request per contact type, then how to follow them."""
    bodies = {
        "phone": {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"},
        "email": {
            "contact_type": "email",
            "email_local": f"demo.assistant{demo.free['email']}",
            "first_name": "Ada",
            "last_name": "Lovelace",
        },
        "whatsapp": {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"},
    }
    auth = shlex.quote(f"Authorization: Bearer {demo.api_key}")
    lines = []
    for contact_type, body in bodies.items():
        url = f"{api}/v0/assistant/{demo.free[contact_type]}/contact"
        lines.append(
            f"curl -s -X POST {url} -H {auth} -H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(body))}"
        )
    lines.append(f"curl -s {api}/v0/assistant/{demo.free['phone']}/contact -H {auth}")
    return lines


# --- children --------------------------------------------------------------------------------


class Output:
    """Lines from every child on this process's stdout, one whole line at a time, each
    prefixed with the child's name."""

    def __init__(self, names: list[str], stream: IO[str] = sys.stdout) -> None:
        self._width = max(map(len, names))
        self._stream = stream
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self._lock:
            self._stream.write(f"{name:<{self._width}} | {text}\n")
            self._stream.flush()

    def say(self, text: str) -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def follow(self, name: str, pipe: IO[bytes]) -> threading.Thread:
        def pump() -> None:
            for raw in pipe:
                self.line(name, raw.decode("utf-8", "replace").rstrip("\n"))

        thread = threading.Thread(target=pump, name=f"output-{name}", daemon=True)
        thread.start()
        return thread


class Children:
    """Child processes, each the leader of its own process group, so stopping a child
    stops whatever it started too, and a Ctrl-C on the terminal reaches only this process
    (which then stops the children in order)."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._pumps: list[threading.Thread] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        assert proc.stdout is not None
        self._pumps.append(self.output.follow(name, proc.stdout))

    def exited(self) -> str | None:
        return next((n for n, p in self.procs.items() if p.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM to every group, wait, SIGKILL what is left; then no member remains."""
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.output.say(f"{name} did not stop within {STOP_TIMEOUT_S:.0f} s: killed")
            # Whatever the leader left in its group (a stray grandchild) goes too.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        for pump in self._pumps:
            pump.join(5)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


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


def _wait_ready(url: str, children: Children, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (name := children.exited()) is not None:
            raise SystemExit(f"{name} exited during start-up; see its output above")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


class _Stop(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def main() -> None:
    base = Settings()
    base.var_dir.mkdir(parents=True, exist_ok=True)
    sandbox_url = f"http://127.0.0.1:{base.sandbox_port}"
    api = f"http://{base.api_host}:{base.api_port}"
    metrics_port = base.worker_metrics_port or DEV_WORKER_METRICS_PORT
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    # Python leaves SIGINT ignored when it starts so (a `&` job of a script): Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    redis_server = redis_url(base)
    console_token = base.console_token.get_secret_value() or dev_console_token(base.var_dir)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PROVISIONER_REDIS_URL": redis_server,
        "PROVISIONER_DATABASE_URL": base.database_url,
        "PROVISIONER_SANDBOX_URL": sandbox_url,
        "PROVISIONER_TWILIO_AUTH_TOKEN": "sandbox",
        "PROVISIONER_GOOGLE_ACCESS_TOKEN": "sandbox",
        "PROVISIONER_WEBHOOK_ALLOW_PRIVATE": "true",
        "PROVISIONER_WORKER_METRICS_PORT": str(metrics_port),
        "PROVISIONER_WORKER_METRICS_HOST": "127.0.0.1",
        "PROVISIONER_LOG_FORMAT": os.environ.get("PROVISIONER_LOG_FORMAT", "console"),
        "PROVISIONER_CONSOLE_TOKEN": console_token,
    }
    cli = [sys.executable, "-m", "worker.cli"]
    commands = {
        "sandbox": [*cli, "sandbox", "--port", str(base.sandbox_port)],
        "api": [*cli, "api", "--host", base.api_host, "--port", str(base.api_port)],
        "worker": [*cli, "worker", "--concurrency", "8"],
        "beat": [*cli, "beat"],
    }
    output = Output(list(commands))
    children = Children(output)
    try:
        db = Database(base.database_url, pool_size=2)
        upgrade(db)
        demo = seed(db, base.var_dir)
        webhook_url, webhook_secret = demo_webhook(db, demo.account_id, sandbox_url)
        db.dispose()
        for name, argv in commands.items():
            children.start(name, argv, env)
        _wait_ready(f"{sandbox_url}/_sandbox/stats", children)
        _wait_ready(f"{api}/readyz", children)
        output.say(
            "\n".join(
                [
                    "",
                    "Try it (one contact of each type, then list them):",
                    *curl_lines(api, demo),
                    "",
                    f"Sandbox: {sandbox_url}  (GET /_sandbox/resources, PUT /_sandbox/faults)",
                    f"Webhooks: {webhook_url}  (GET it to see the signed deliveries)",
                    f"Webhook secret: {webhook_secret}",
                    f"Metrics: {api}/metrics  http://127.0.0.1:{metrics_port}/metrics (worker)",
                    f"Account id: {demo.account_id}",
                    f"API: {api}",
                    f"Console: {api}/console/sign-in?token={console_token}",
                    f"API key: {demo.api_key}",
                    f"Assistant ids: {' '.join(map(str, demo.assistant_ids))}",
                    "Ctrl-C stops everything.",
                ]
            )
        )
        while (name := children.exited()) is None:
            time.sleep(0.5)
        output.say(f"{name} exited; stopping the stack")
        raise SystemExit(1)
    except (KeyboardInterrupt, _Stop):
        output.say("stopping...")
    finally:
        # A second signal must not cut the clean-up short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        children.stop()
        if not base.redis_url:  # the embedded Redis (its data stays in var/, append-only)
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(redis_server).shutdown()
        output.say("stopped")


if __name__ == "__main__":
    main()
