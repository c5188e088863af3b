"""`GET /v0/events`: the account's events as server-sent events (sse-starlette frames them).

Each event is the webhook's: `id:` its `webhook-id`, `event:` its type, `data:` its body. A
reconnecting client's `Last-Event-ID` resumes after that event, from the outbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api_stub import live
from worker.app.events import Cursor, EventFeed

Call = Callable[[Request, Callable[[int], Any]], Awaitable[Any]]
PING_S = 10  # a comment line this often keeps proxies from closing an idle stream
RECHECK_S = 5.0  # read the outbox at least this often, whatever the wake-ups
PAGE = 500


class StreamEnded(Exception):
    """The caller may no longer read the stream (its console session ended)."""


def stream_response(
    request: Request,
    feed: EventFeed,
    waiters: live.Waiters,
    account_id: int | None,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
) -> EventSourceResponse:
    """The events of `account_id` (all accounts when None) after the request's Last-Event-ID.

    `still_allowed`, asked before every read of the outbox (at least every RECHECK_S), ends
    the stream once it answers False."""
    cursor = Cursor.start(request.headers.get("last-event-id"))
    key = live.ALL if account_id is None else ("account", account_id)

    async def read() -> Any:
        if still_allowed is not None and not await still_allowed():
            raise StreamEnded
        return await run_in_threadpool(feed.after, account_id, cursor, PAGE)

    async def events() -> Any:
        with waiters.watch(key) as woken:
            await waiters.ready()
            try:
                async for event in live.event_stream(woken, read, RECHECK_S, PAGE):
                    yield event
            except StreamEnded:
                return

    return EventSourceResponse(
        events(), ping=PING_S, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def install(app: FastAPI, *, call: Call, feed: EventFeed, waiters: live.Waiters) -> None:
    # Not in the OpenAPI document: a stream never ends, which a schema walker cannot test.
    @app.get("/v0/events", include_in_schema=False)
    async def get_events(request: Request) -> EventSourceResponse:
        account_id = await call(request, lambda account_id: account_id)
        return stream_response(request, feed, waiters, account_id)
