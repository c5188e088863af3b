"""The outbox read as a stream: events after a cursor, for `GET /v0/events` and the console.

Event ids are time-ordered (`new_id`), so "after this event" is `id >` it. An event can commit
a little after one with a later id (its transaction was slower); a live stream therefore
re-reads a short look-back window on every read and skips what it already sent (`Cursor`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson
from sqlalchemy import select

from worker.domain.errors import InvalidRequest
from worker.domain.ids import floor_id, is_id, time_ms_of
from worker.store.db import Database
from worker.store.models import Event

LOOKBACK_MS = 30_000  # longer than any transition's transaction takes to commit
RECHECK_S = 2.0  # how often a live stream looks for late commits in that window


@dataclass(frozen=True)
class StreamEvent:
    id: str
    type: str
    data: str  # the webhook body, byte for byte


@dataclass
class Cursor:
    """Where a stream is: where it started (nothing at or below is sent), the newest id sent,
    and the ids sent within the look-back window below that."""

    start_id: str
    last_id: str = ""
    sent: dict[str, int] = field(default_factory=dict)  # id -> its time (ms)
    checked_at: float = 0.0  # monotonic time of the last look for late commits

    @classmethod
    def start(cls, last_event_id: str | None) -> Cursor:
        """After `last_event_id` (a reconnecting client's `Last-Event-ID`), else from now."""
        if last_event_id is None or last_event_id == "":
            start = floor_id("evt", int(time.time() * 1000))
        elif is_id("evt", last_event_id):
            start = last_event_id
        else:
            raise InvalidRequest(
                "Last-Event-ID is not an event id", {"Last-Event-ID": "must be an evt_ id"}
            )
        return cls(start, start)

    def floor(self) -> str:
        """Read above this: the look-back window below the newest id sent, never below the
        start."""
        newest = time_ms_of(self.last_id) or 0
        return max(self.start_id, floor_id("evt", newest - LOOKBACK_MS))

    def take(self, events: list[StreamEvent]) -> list[StreamEvent]:
        """The events not sent yet, remembered as sent; the window's old ids forgotten."""
        fresh = [e for e in events if e.id > self.start_id and e.id not in self.sent]
        for event in fresh:
            self.sent[event.id] = time_ms_of(event.id) or 0
            self.last_id = max(self.last_id, event.id)
        horizon = (time_ms_of(self.last_id) or 0) - LOOKBACK_MS
        for old in [i for i, ms in self.sent.items() if ms < horizon]:
            del self.sent[old]
        return fresh


class EventFeed:
    def __init__(self, db: Database) -> None:
        self.db = db

    def after(self, account_id: int | None, cursor: Cursor, limit: int = 500) -> list[StreamEvent]:
        """The next events for `cursor` (of one account, or of all when None), oldest first:
        those above the newest sent, and, at most every `RECHECK_S`, any that committed late
        inside the look-back window."""
        mine = [] if account_id is None else [Event.account_id == account_id]
        full = select(Event.id, Event.type, Event.payload)
        with self.db.read() as session:
            late: list[str] = []
            now = time.monotonic()
            if cursor.sent and now - cursor.checked_at >= RECHECK_S:
                cursor.checked_at = now
                window = select(Event.id).where(
                    Event.id > cursor.floor(), Event.id < cursor.last_id, *mine
                )
                late = [i for i in session.execute(window).scalars() if i not in cursor.sent]
            rows = (
                list(session.execute(full.where(Event.id.in_(late[:limit]))).all()) if late else []
            )
            tail = full.where(Event.id > cursor.last_id, *mine).order_by(Event.id).limit(limit)
            rows += session.execute(tail).all()
        return cursor.take(
            [StreamEvent(r.id, r.type, orjson.dumps(r.payload).decode("utf-8")) for r in rows]
        )
