"""Fixtures for webhooks: fast settings, real worker/beat processes, the sandbox's sinks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.services import settings_env
from support.webhooks import FAST

from worker.celery_app import CeleryPublisher, create_celery
from worker.service import ContactService
from worker.settings import Settings
from worker.webhooks import WebhookService


@pytest.fixture
def wsettings(make_settings, sandbox) -> Settings:
    return make_settings(sandbox_url=sandbox.url, **FAST)


@pytest.fixture
def service(wsettings, db) -> ContactService:
    return ContactService(db, wsettings, CeleryPublisher(create_celery(wsettings)))


@pytest.fixture
def webhooks(wsettings, db) -> WebhookService:
    return WebhookService(db, wsettings)


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=out,
                                     start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown, no acks."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


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


