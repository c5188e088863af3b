"""Wake-ups for live status: a Redis pub/sub message after a contact's status change commits.

The worker (and an operator's retry) publishes `{"contact_id", "batch_id", "account_id",
"status"}` on one channel per Redis database after the transaction that changed the contact
commits; the API process holds one subscription and wakes the long polls and event streams
waiting on that contact, batch or account. Pub/sub is fire-and-forget: a lost message only
delays a waiter to the end of its wait, when it reads the database anyway, so publishing is
best effort and never fails the caller.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
import structlog

from worker.redis_conn import RedisTarget, target_of
from worker.settings import Settings

log = structlog.get_logger(__name__)


def channel_for(client: Any) -> str:
    """The channel of the Redis database `client` uses: pub/sub ignores database numbers, so
    the number goes into the name (two deployments on one server stay apart)."""
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return f"provisioner:{db}:status"


def encode(contact_id: str, batch_id: str | None, account_id: int | None, status: str) -> bytes:
    return orjson.dumps(
        {"contact_id": contact_id, "batch_id": batch_id, "account_id": account_id, "status": status}
    )


def decode(data: bytes | str) -> dict[str, Any] | None:
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) and "contact_id" in message else None


class Notifier:
    """Publishes status changes; one per process, its connection pooled."""

    def __init__(self, url: str | RedisTarget) -> None:
        self._redis = target_of(url).client(socket_timeout=0.5, socket_connect_timeout=0.5)
        self.channel = channel_for(self._redis)

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier:
        return cls(RedisTarget.from_settings(settings))

    def changed(
        self, contact_id: str, batch_id: str | None, account_id: int | None, status: str
    ) -> None:
        """Call after the commit: a waiter woken before it would read the old status."""
        try:
            self._redis.publish(self.channel, encode(contact_id, batch_id, account_id, status))
        except (redis.RedisError, OSError) as exc:
            log.warning("status_publish_failed", error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._redis.close()


class NoNotifier:
    """For callers without Redis (unit tests of the pipeline): nobody is woken."""

    def changed(
        self, contact_id: str, batch_id: str | None, account_id: int | None, status: str
    ) -> None:
        return None

    def close(self) -> None:
        return None
