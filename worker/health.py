"""Liveness files of the worker and beat processes, and the check a container probe runs on them.

Each worker process writes `var_dir/health/worker-<pid>.json` after every heartbeat attempt
(worker/runtime/liveness.py), and beat writes `var_dir/health/beat.json` at every tick of its
scheduler (worker/runtime/beat_health.py). `provisioner worker --check-alive` and `provisioner
beat --check-alive` read them: a file, not a port or a database query, so the probe costs
nothing and needs no network. Plain stdlib: the probe imports little.

What "alive" means: the heartbeat thread (or beat's loop) has come round within `max_age_s`.
A heartbeat the database refused still counts as a sign of life (and is reported): restarting
a worker does not bring a database back, and beat's takeover already judges workers by the
heartbeat rows themselves.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

HEALTH_DIR = "health"
BEAT_FILE = "beat.json"
WORKER_PREFIX = "worker-"


def health_dir(var_dir: Path) -> Path:
    return var_dir / HEALTH_DIR


def worker_file(var_dir: Path, pid: int | None = None) -> Path:
    return health_dir(var_dir) / f"{WORKER_PREFIX}{pid or os.getpid()}.json"


def beat_file(var_dir: Path) -> Path:
    return health_dir(var_dir) / BEAT_FILE


def record(path: Path, **fields: object) -> None:
    """Replace `path` with one JSON object (`at`: now, and `fields`), atomically: a probe
    never reads half a file. Never raises: a full disk must not stop a heartbeat."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"at": time.time(), "pid": os.getpid(), **fields}))
        os.replace(tmp, path)
    except OSError:
        pass


def forget(path: Path) -> None:
    path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Verdict:
    alive: bool
    message: str


def _read(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _age(record_: dict[str, object], now: float) -> float | None:
    at = record_.get("at")
    return now - at if isinstance(at, int | float) else None


def judge_beat(record_: dict[str, object] | None, now: float, max_age_s: float) -> Verdict:
    """Beat is alive when its scheduler ticked within `max_age_s`."""
    if record_ is None:
        return Verdict(False, "beat has not ticked yet (no health file)")
    age = _age(record_, now)
    if age is None:
        return Verdict(False, "beat's health file is unreadable")
    if age > max_age_s:
        return Verdict(False, f"beat last ticked {age:.0f} s ago (more than {max_age_s:g} s)")
    return Verdict(True, f"beat ticked {age:.1f} s ago")


def judge_workers(records: list[dict[str, object]], now: float, max_age_s: float) -> Verdict:
    """Every running worker process (`records` of live pids) beat within `max_age_s`; with
    `--processes N` one silent child fails the whole container, as its death would."""
    if not records:
        return Verdict(False, "no worker process has beaten yet (no health file)")
    lines = []
    for rec in records:
        age = _age(rec, now)
        pid = rec.get("pid")
        if age is None or age > max_age_s:
            shown = "never" if age is None else f"{age:.0f} s ago"
            return Verdict(
                False, f"worker {pid}'s heartbeat last ran {shown} (more than {max_age_s:g} s)"
            )
        database = rec.get("database")
        state = "recorded" if database == "ok" else f"not recorded: {database}"
        lines.append(f"worker {pid} beat {age:.1f} s ago ({state})")
    return Verdict(True, "; ".join(lines))


def check_beat(var_dir: Path, max_age_s: float, now: float | None = None) -> Verdict:
    return judge_beat(_read(beat_file(var_dir)), time.time() if now is None else now, max_age_s)


def check_workers(var_dir: Path, max_age_s: float, now: float | None = None) -> Verdict:
    """Judge the files of the worker processes still running here (a file left by a process
    that is gone, say before a container restart, is not judged)."""
    records = []
    for path in sorted(health_dir(var_dir).glob(f"{WORKER_PREFIX}*.json")):
        rec = _read(path)
        if rec is not None and _pid_alive(rec.get("pid")):
            records.append(rec)
    return judge_workers(records, time.time() if now is None else now, max_age_s)
