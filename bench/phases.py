"""Where a provisioning task's wall time goes, measured inside the worker.

`python bench/phases.py OUT_PREFIX worker [provisioner worker options]` runs
`provisioner worker` in this process with probes around the three kinds of waiting a task
does: database transactions (`Database.write`), provider requests (`httpx.Client.send`, the
provider budget's hook included) and broker publishes (`CeleryPublisher._publish`). Each task
(Celery's task_prerun to task_postrun) appends one JSON line to `OUT_PREFIX.<pid>`: its start,
its end, its thread and its timed events. `summarise(OUT_PREFIX)` reads them back.

What this tells that a CPU profile does not: how long each phase takes on the wall clock under
load (a 2 ms transaction that takes 10 ms is waiting for the GIL, a core or a lock), the time
between the phases (our own Python), and how many of the worker's threads were busy with a
task at all (a thread pool that waits for its next message shows as a low slot occupancy).

A bench tool only: the probes are monkeypatches installed before the worker starts, nothing
in `worker/` knows about them. Their own cost is two `perf_counter()` calls per event and a
line per task.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def install(prefix: str) -> None:
    """Patch the probes in; call before the worker imports its tasks."""
    import httpx
    from celery.signals import task_postrun, task_prerun

    from worker.runtime.celery_app import CeleryPublisher
    from worker.store.db import Database

    out = open(f"{prefix}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 (process lifetime)
    local = threading.local()

    def note(kind: str, started: float) -> None:
        events = getattr(local, "events", None)
        if events is not None:
            events.append((kind, started, time.perf_counter()))

    send = httpx.Client.send

    def timed_send(self: httpx.Client, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return send(self, *args, **kwargs)
        finally:
            note("http", started)

    write = Database.write

    @contextlib.contextmanager
    def timed_write(self: Database) -> Iterator[Any]:
        started = time.perf_counter()
        with write(self) as session:
            yield session
        note("db", started)

    publish = CeleryPublisher._publish

    def timed_publish(self: CeleryPublisher, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return publish(self, *args, **kwargs)
        finally:
            note("publish", started)

    httpx.Client.send = timed_send  # type: ignore[method-assign]
    Database.write = timed_write  # type: ignore[method-assign,assignment]
    CeleryPublisher._publish = timed_publish  # type: ignore[method-assign]

    @task_prerun.connect(weak=False)
    def started(**_: Any) -> None:
        local.events = []
        local.t0 = time.perf_counter()

    @task_postrun.connect(weak=False)
    def finished(**_: Any) -> None:
        t1 = time.perf_counter()
        line = {"t0": local.t0, "t1": t1, "thread": threading.get_ident(), "ev": local.events}
        out.write(json.dumps(line) + "\n")
        local.events = None


def summarise(prefix: str | Path, threads_per_process: int) -> dict[str, Any] | None:
    """Per phase mean wall ms of the tasks with the most common phase sequence, task time
    percentiles, and slot occupancy (mean busy threads / threads) per process."""
    prefix = Path(prefix)
    tasks: list[dict[str, Any]] = []
    by_process: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in prefix.parent.glob(prefix.name + ".*"):
        for line in path.read_text().splitlines():
            task = json.loads(line)
            task["ev"].sort(key=lambda e: e[1])
            tasks.append(task)
            by_process[path.name].append(task)
    if not tasks:
        return None
    shapes = Counter(tuple(e[0] for e in t["ev"]) for t in tasks)
    shape, count = shapes.most_common(1)[0]
    typical = [t for t in tasks if tuple(e[0] for e in t["ev"]) == shape]
    phases: list[tuple[str, float]] = []
    for i, kind in enumerate(shape):
        # Before each event, the task's own Python since the previous one (or since the start).
        gap = [t["ev"][i][1] - (t["ev"][i - 1][2] if i else t["t0"]) for t in typical]
        phases.append(("python", statistics.fmean(gap) * 1e3))
        took = [t["ev"][i][2] - t["ev"][i][1] for t in typical]
        phases.append((kind, statistics.fmean(took) * 1e3))
    phases.append(("python", statistics.fmean(t["t1"] - t["ev"][-1][2] for t in typical) * 1e3))
    durations = sorted(t["t1"] - t["t0"] for t in tasks)
    occupancy = []
    for group in by_process.values():
        span = max(t["t1"] for t in group) - min(t["t0"] for t in group)
        if span > 0:
            occupancy.append(sum(t["t1"] - t["t0"] for t in group) / span / threads_per_process)
    totals: dict[str, float] = defaultdict(float)
    for kind, ms in phases:
        totals[kind] += ms
    return {
        "tasks": len(tasks),
        "typical": count,
        "shape": list(shape),
        "phases_ms": phases,
        "totals_ms": dict(totals),
        "task_ms": {
            "mean": statistics.fmean(durations) * 1e3,
            "p50": durations[len(durations) // 2] * 1e3,
            "p90": durations[int(len(durations) * 0.9)] * 1e3,
        },
        "occupancy": statistics.fmean(occupancy) if occupancy else None,
    }


def describe(summary: dict[str, Any]) -> str:
    """One line: the phases in order, then the totals."""
    steps = " | ".join(f"{kind} {ms:.1f}" for kind, ms in summary["phases_ms"])
    totals = ", ".join(f"{kind} {ms:.1f}" for kind, ms in sorted(summary["totals_ms"].items()))
    task = summary["task_ms"]
    occupancy = summary["occupancy"]
    return (
        f"task {task['mean']:.1f} ms (p50 {task['p50']:.1f}, p90 {task['p90']:.1f}); "
        f"slots busy {occupancy:.0%}; "
        f"{summary['typical']} of {summary['tasks']} tasks: {steps} ms; totals: {totals} ms"
        if occupancy is not None
        else f"task {task['mean']:.1f} ms; {steps}"
    )


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python bench/phases.py OUT_PREFIX worker [options]")
    sys.path.insert(0, str(ROOT))
    install(argv[0])
    from worker.cli import main as provisioner

    sys.argv = ["provisioner", *argv[1:]]
    provisioner()


if __name__ == "__main__":
    main(sys.argv[1:])
