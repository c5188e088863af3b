"""Beat's scheduler: Celery's own, which also records each tick's time in Redis, for the
API's `provisioner_beat_last_tick_timestamp_seconds` (the "beat silent" alert)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis as redis_py
import structlog
from celery.beat import PersistentScheduler

from worker.metrics import record_beat_tick
from worker.redis_conn import RedisTarget, target_of
from worker.runtime.beat_health import ticking_scheduler

log = structlog.get_logger(__name__)


def recording_scheduler(
    redis: str | RedisTarget, health_file: Path | None = None
) -> type[PersistentScheduler]:
    """A PersistentScheduler class that records its ticks in `redis` (a URL, or the settings'
    Redis: one URL or a master behind Sentinel) for the API's gauge and, with `health_file`,
    in that file for `provisioner beat --check-alive` (worker.runtime.beat_health)."""
    base = ticking_scheduler(health_file) if health_file is not None else PersistentScheduler

    class RecordingScheduler(base):  # type: ignore[valid-type,misc]
        _client = target_of(redis).client(socket_timeout=1, socket_connect_timeout=1)
        _failing = False

        def tick(self, *args: Any, **kwargs: Any) -> float:
            interval: float = super().tick(*args, **kwargs)
            try:
                record_beat_tick(self._client, time.time())
            except redis_py.RedisError as exc:  # the broker is down too: said once per outage
                if not self._failing:
                    log.warning("beat_tick_not_recorded", error=type(exc).__name__)
                self._failing = True
            else:
                self._failing = False
            return interval

    return RecordingScheduler
