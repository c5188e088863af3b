"""`provisioner worker --processes N`: N worker processes under one command.

One worker process is held to about one core by the GIL, whatever its thread count, so a host
with several cores needs several processes (docs/benchmarks.md: one process stops near 85-100
provisioned contacts a second at any concurrency, two on two cores reach 130-170). Celery's
threads pool has no process dimension of its own; this gives `provisioner worker` one, as
`provisioner api --workers` does for the API.

The parent runs no tasks. It starts N children (`provisioner worker` with the same options and
its share of the threads) in its own process group, and:

- on SIGTERM or SIGINT sends each child SIGTERM, Celery's warm shutdown (running tasks finish;
  a child that also got the signal itself, as from a terminal's Ctrl-C or systemd's
  control-group kill, just shuts down once), then waits for all of them;
- if a child exits on its own, stops the others and exits with that child's status, so the
  supervisor above (systemd, Kubernetes, a Procfile runner) restarts the whole group rather
  than leaving it short of a process nobody sees missing.

If the parent itself is killed with SIGKILL, the children run on as ordinary workers (leases
keep them correct) until their own supervisor or cgroup stops them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import structlog

log = structlog.get_logger(__name__)

POLL_S = 0.2
# How long the children get to finish their running tasks after SIGTERM: above the tasks' hard
# time limit (`task_time_limit`, worker/runtime/celery_app.py), below the 180 s grace the deploy
# files give a worker.
STOP_TIMEOUT_S = 170.0


def split(concurrency: int, processes: int) -> list[int]:
    """Threads per process: `concurrency` spread as evenly as possible, every process >= 1."""
    if processes < 1:
        raise ValueError("processes must be at least 1")
    if concurrency < processes:
        raise ValueError(
            f"--concurrency {concurrency} is less than --processes {processes}: "
            "every process needs at least one thread"
        )
    base, extra = divmod(concurrency, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def child_env(metrics_port: int, index: int) -> dict[str, str]:
    """The child's environment: ours, with its own metrics port (the parent's + index) when
    metrics are served (0 = none)."""
    env = dict(os.environ)
    if metrics_port:
        env["PROVISIONER_WORKER_METRICS_PORT"] = str(metrics_port + index)
    return env


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def run(
    threads: Sequence[int], queues: str, pool: str, metrics_port: int, *, stop_timeout_s: float
) -> int:
    """Run one child per entry of `threads` until a signal or a child's exit; the exit code."""
    children: list[subprocess.Popen[bytes]] = []
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        for index, count in enumerate(threads):
            argv = [sys.executable, "-m", "worker.cli", "worker", "--processes", "1"]
            argv += ["--concurrency", str(count), "--queues", queues, "--pool", pool]
            children.append(subprocess.Popen(argv, env=child_env(metrics_port, index)))  # noqa: S603
        log.info("worker_group_started", pids=[c.pid for c in children], threads=list(threads))
        while True:
            for child in children:
                status = child.poll()
                if status is not None:
                    log.error("worker_child_exited", pid=child.pid, status=status)
                    code = status or 1
                    raise _Stop(signal.SIGTERM)
            time.sleep(POLL_S)
    except _Stop as stop:
        log.info("worker_group_stopping", reason=str(stop))
    finally:
        # A second signal must not cut the shutdown short.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + stop_timeout_s
        for child in children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker_child_killed", pid=child.pid)
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code
