"""Beat's scheduler: Celery's own, which also records each tick's time in Redis, for the
API's `provisioner_beat_last_tick_timestamp_seconds` (the "beat silent" alert)."""

from __future__ import annotations

import time
from typing import Any

import redis as redis_py
import structlog
from celery.beat import PersistentScheduler

from worker.metrics import record_beat_tick
from worker.redis_conn import RedisTarget, target_of

log = structlog.get_logger(__name__)


def recording_scheduler(redis: str | RedisTarget) -> type[PersistentScheduler]:
    """A PersistentScheduler class that records its ticks in `redis` (a URL, or the settings'
    Redis: one URL or a master behind Sentinel)."""

    class RecordingScheduler(PersistentScheduler):
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
