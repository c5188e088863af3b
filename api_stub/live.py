"""Live status: long polls and server-sent events, woken by the worker's Redis messages.

One subscription per API process (`Waiters`) wakes the asyncio events of the requests waiting
on a contact, a batch or an account. A waiting request holds an `asyncio.Event`, no thread
and no database connection; it reads the database when woken, and once more at the end of
its wait, so a lost message only delays its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import structlog

from worker.live import channel_for, decode
from worker.redis_conn import RedisTarget, target_of

log = structlog.get_logger(__name__)

Key = tuple[str, Any]
ALL: Key = ("all", None)


class Waiters:
    def __init__(self, redis: str | RedisTarget) -> None:
        self.redis = target_of(redis)
        self._waiters: dict[Key, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self.waiting = 0

    def count(self) -> int:
        """Requests registered (reading or waiting)."""
        return sum(len(v) for v in self._waiters.values())

    async def wait_until(
        self,
        woken: asyncio.Event,
        seconds: float,
        read: Callable[[], Awaitable[Any]],
        changed: Callable[[Any], bool],
        first: Any,
    ) -> Any:
        """`first`, or the first read after a wake-up for which `changed` holds, or the last
        read when `seconds` have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        value = first
        self.waiting += 1  # requests between reads: they hold no thread and no connection
        try:
            while not changed(value):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), remaining)
                woken.clear()  # before the read: a message during the read wakes the next round
                value = await read()
        finally:
            self.waiting -= 1
        return value

    @contextlib.contextmanager
    def watch(self, *keys: Key) -> Iterator[asyncio.Event]:
        """An event set by every message about any of `keys`, for the `with` block."""
        self._ensure_listening()
        woken = asyncio.Event()
        for key in keys:
            self._waiters.setdefault(key, set()).add(woken)
        try:
            yield woken
        finally:
            for key in keys:
                group = self._waiters.get(key)
                if group is not None:
                    group.discard(woken)
                    if not group:
                        del self._waiters[key]

    async def ready(self, timeout: float = 1.0) -> None:
        """Wait (briefly) for the subscription, so a change right after the first read is not
        missed; without Redis the waiters still answer, at the end of their waits."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    def _ensure_listening(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._ready = asyncio.Event()
            self._task = loop.create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            client = self.redis.async_client(socket_connect_timeout=2)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(channel_for(client))
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("status_subscription_lost", error=f"{type(exc).__name__}: {exc}")
                self._ready.clear()
                await asyncio.sleep(1.0)
            finally:
                await self.redis.aclose(client)

    def _wake(self, data: bytes) -> None:
        message = decode(data)
        if message is None:
            return
        keys = [("contact", message["contact_id"]), ALL]
        if message.get("batch_id"):
            keys.append(("batch", message["batch_id"]))
        if message.get("account_id") is not None:
            keys.append(("account", message["account_id"]))
        for key in keys:
            for woken in self._waiters.get(key, ()):
                woken.set()


class SingleFlight:
    """Concurrent reads of one key share one database read: the waiters on a contact woken by
    one message need one read between them, not one each."""

    def __init__(self) -> None:
        self._flights: dict[Any, asyncio.Future[Any]] = {}

    async def read(self, key: Any, fn: Callable[[], Awaitable[Any]]) -> Any:
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(fn())
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(flight)


async def event_stream(
    woken: asyncio.Event,
    read: Callable[[], Awaitable[list[Any]]],
    recheck_s: float,
    page: int,
) -> AsyncIterator[dict[str, str]]:
    """Server-sent events from `read` (the next outbox events), read again on every wake-up
    and at least every `recheck_s`."""
    while True:
        woken.clear()
        events = await read()
        for event in events:
            yield {"id": event.id, "event": event.type, "data": event.data}
        if len(events) >= page:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), recheck_s)
