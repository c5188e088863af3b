"""Helpers for pipeline tests: submit contacts, wait for them, drive the pipeline in-process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.services import settings_env
from worker.app.contacts import ContactService
from worker.runtime.pipeline import Outcome, Pipeline
from worker.settings import Settings

FAST = {
    "twilio_auth_token": "sandbox-token",
    "google_access_token": "sandbox-token",
    "lease_s": 10,
    "retry_base_s": 0.05,
    "retry_max_s": 0.5,
    "step_max_attempts": 6,
    "step_max_total_s": 120,
    "sender_poll_s": 0.2,
    "reconcile_grace_s": 1.0,
    "reconcile_interval_s": 0.5,
    "provider_connect_timeout_s": 1.0,
    "provider_read_timeout_s": 2.0,
    "log_format": "json",
}


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=out,
                                     start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acks, a crash as the kernel would deliver it."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def spawn(tmp_path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(kind: str, settings: Settings, *args: str) -> Proc:
        cli = [sys.executable, "-m", "worker.cli", kind, *args]
        proc = Proc(cli, settings_env(settings), tmp_path / f"{kind}-{len(procs)}.log").start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


def submit(service: ContactService, tenant, body: dict[str, Any], assistant: int | None = None) -> str:
    import json

    assistant = assistant or tenant.assistant_ids[0]
    reply = service.submit(tenant.account_id, assistant, json.dumps(body).encode(),
                           path=f"/v0/assistant/{assistant}/contact")
    return reply.body["info"]["id"]


def dedicated(service: ContactService, tenant, waba_id: str | None = None) -> None:
    """Give the tenant's account a WhatsApp Business Account of its own (by default the one the
    sandbox registers as the platform's, so senders land where they always did): its WhatsApp
    contacts then get a dedicated sender while that WABA has room, instead of the shared pool
    (worker/domain/whatsapp_pool.choose_mode). For tests that are about a dedicated sender."""
    from datetime import UTC, datetime

    from worker.store import connections

    # Recorded as `PUT /v0/providers/whatsapp` records it, without its check at Twilio (a
    # request the tests that count them would see).
    with service.db.write() as session:
        connections.put(
            session,
            tenant.account_id,
            "whatsapp",
            "",
            {"waba_id": waba_id or service.settings.twilio_waba_id},
            service.connections.box.seal({}),
            datetime.now(UTC),
        )


def wait_for(predicate: Callable[[], Any], timeout: float = 60, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def statuses(db) -> dict[str, str]:
    from sqlalchemy import select

    from worker.store.models import Contact

    with db.read() as session:
        return dict(session.execute(select(Contact.id, Contact.status)).all())


def all_terminal(db, count: int | None = None) -> bool:
    found = statuses(db)
    if count is not None and len(found) != count:
        return False
    return all(s in ("active", "failed") for s in found.values())


def drive(pipeline: Pipeline, contact_id: str, owner: str = "test-runner", limit: int = 200) -> str:
    """Run the pipeline in-process the way the task does, sleeping out each delay."""
    return drive_outcome(pipeline, contact_id, owner, limit).state


def drive_outcome(
    pipeline: Pipeline, contact_id: str, owner: str = "test-runner", limit: int = 200
) -> Outcome:
    """`drive`, answering the last run's whole outcome (its events to publish among it)."""
    for _ in range(limit):
        outcome = pipeline.run(contact_id, owner)
        if outcome.again_in_s is None:
            return outcome
        time.sleep(outcome.again_in_s)
    raise AssertionError("contact did not finish")
