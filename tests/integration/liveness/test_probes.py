"""The containers' liveness probes (`provisioner worker --check-alive`, `provisioner beat
--check-alive`) against real worker and beat processes: alive while they run, not alive once
they are frozen (SIGSTOP: a wedged process, which a restart cures) or gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from support.pipeline import FAST, spawn, wait_for  # noqa: F401 - spawn is a fixture
from support.services import settings_env

CLI = [sys.executable, "-m", "worker.cli"]


def probe(settings, kind: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, kind, "--check-alive", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=60)


def test_worker_probe_follows_the_heartbeat_of_a_real_worker(make_settings, sandbox, db, spawn):
    settings = make_settings(sandbox_url=sandbox.url, **FAST, worker_heartbeat_s=0.5,
                             worker_dead_after_s=3.0)
    assert probe(settings, "worker").returncode == 1  # no worker has beaten here yet
    worker = spawn("worker", settings, "--concurrency", "2")
    alive = wait_for(lambda: (p := probe(settings, "worker")).returncode == 0 and p, timeout=60)
    assert f"worker {worker.proc.pid} beat" in alive.stdout and "(recorded)" in alive.stdout

    os.kill(worker.proc.pid, signal.SIGSTOP)  # frozen: its heartbeat thread stops too
    try:
        dead = wait_for(lambda: (p := probe(settings, "worker")).returncode == 1 and p,
                        timeout=30)
        assert "heartbeat last ran" in dead.stderr
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    wait_for(lambda: probe(settings, "worker").returncode == 0, timeout=30)

    worker.kill()  # gone: its file is left, but it no longer counts
    assert probe(settings, "worker").returncode == 1


def test_beat_probe_follows_the_ticks_of_a_real_beat(make_settings, db, spawn):
    settings = make_settings(**FAST)
    assert probe(settings, "beat").returncode == 1
    beat = spawn("beat", settings)
    alive = wait_for(lambda: (p := probe(settings, "beat", "--max-age", "3")).returncode == 0
                     and p, timeout=60)
    assert alive.stdout.startswith("beat ticked")

    os.kill(beat.proc.pid, signal.SIGSTOP)
    try:
        dead = wait_for(lambda: (p := probe(settings, "beat", "--max-age", "3")).returncode == 1
                        and p, timeout=30)
        assert "beat last ticked" in dead.stderr
    finally:
        os.kill(beat.proc.pid, signal.SIGCONT)
    wait_for(lambda: probe(settings, "beat", "--max-age", "3").returncode == 0, timeout=30)
