"""Beat's scheduler with a pulse: each tick of Celery's persistent scheduler is recorded in
`var_dir/health/beat.json` for `provisioner beat --check-alive` (worker.health)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

from worker import health

# Beat sleeps at most this long between ticks (Celery's default is 300 s), so that a tick
# older than a minute means a stuck beat, whatever the schedule's intervals are.
MAX_INTERVAL_S = 10.0
# `provisioner beat --check-alive`'s default: six missed ticks.
CHECK_MAX_AGE_S = 60.0


def ticking_scheduler(health_file: Path) -> type[PersistentScheduler]:
    """A PersistentScheduler class that records each tick in `health_file`."""

    class TickingScheduler(PersistentScheduler):
        def tick(self, *args: Any, **kwargs: Any) -> float:
            interval: float = super().tick(*args, **kwargs)
            health.record(health_file, next_in_s=interval)
            return interval

    return TickingScheduler
