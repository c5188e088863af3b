"""Fixtures for the pipeline: settings tuned for tests, real worker and beat processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.services import settings_env

from worker.celery_app import CeleryPublisher, create_celery
from worker.pipeline import Pipeline
from worker.providers import Providers
from worker.service import ContactService
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


@pytest.fixture
def psettings(make_settings, sandbox) -> Settings:
    return make_settings(sandbox_url=sandbox.url, **FAST)


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


@pytest.fixture
def service(psettings, db) -> ContactService:
    return ContactService(db, psettings, CeleryPublisher(create_celery(psettings)))


@pytest.fixture
def pipeline(psettings, db) -> Iterator[Pipeline]:
    providers = Providers.from_settings(psettings)
    yield Pipeline(db, providers, psettings)
    providers.close()
