"""`GET /v0/events`: the webhook events as server-sent events, resumable by Last-Event-ID."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
from sqlalchemy import select
from support.pipeline import drive, submit

from worker.store.models import Event

PHONE = {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"}


class Reader:
    """Reads one SSE connection in a thread; `events` fills as frames arrive."""

    def __init__(self, url, headers):
        self.events, self.comments = [], []
        self._stop = threading.Event()
        self._response = None
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url, headers):
        with httpx.Client(timeout=None) as http, http.stream("GET", url, headers=headers) as r:
            self._response = r
            self.status = r.status_code
            self.content_type = r.headers.get("content-type")
            frame = {}
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith(":"):
                    self.comments.append(line)
                elif line == "":
                    if frame:
                        self.events.append(frame)
                    frame = {}
                else:
                    name, _, value = line.partition(":")
                    frame[name] = value.removeprefix(" ")

    def wait_for(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"only {len(self.events)} of {count} events"
            time.sleep(0.05)
        return self.events

    def close(self):
        self._stop.set()
        if self._response is not None:
            self._response.close()


def _stored(db):
    with db.read() as session:
        rows = session.execute(select(Event).order_by(Event.id)).scalars().all()
        return {e.id: e for e in rows}


def test_events_are_the_webhook_bodies_with_their_ids_and_types(
    live_url, service, pipeline, tenant, db, sandbox
):
    reader = Reader(f"{live_url}/v0/events", tenant.headers)
    time.sleep(0.5)
    cid = submit(service, tenant, PHONE)
    assert drive(pipeline, cid) == "active"
    (frame,) = reader.wait_for(1)
    reader.close()
    assert reader.status == 200 and reader.content_type.startswith("text/event-stream")
    event = _stored(db)[frame["id"]]
    assert frame["event"] == "contact.active" == event.type
    assert frame["data"] == orjson.dumps(event.payload).decode()  # the webhook body


def test_stream_resumes_after_a_dropped_connection_with_no_gap_and_no_duplicate(
    live_url, service, pipeline, make_tenant, db, sandbox
):
    tenant = make_tenant(assistants=4)
    other = make_tenant(name="other")
    reader = Reader(f"{live_url}/v0/events", tenant.headers)
    time.sleep(0.5)
    first = submit(service, tenant, PHONE, tenant.assistant_ids[0])
    drive(pipeline, first)
    (seen,) = reader.wait_for(1)
    reader.close()  # the connection drops; two more events happen meanwhile
    missed = [submit(service, tenant, PHONE, a) for a in tenant.assistant_ids[1:3]]
    for cid in missed:
        drive(pipeline, cid)
    drive(pipeline, submit(service, other, PHONE))  # another account's: never in this stream

    again = Reader(f"{live_url}/v0/events", {**tenant.headers, "Last-Event-ID": seen["id"]})
    later = submit(service, tenant, PHONE, tenant.assistant_ids[3])
    drive(pipeline, later)
    frames = again.wait_for(3)
    time.sleep(1)  # anything more would be a duplicate
    again.close()
    stored = _stored(db)
    contacts = [orjson.loads(f["data"])["data"]["id"] for f in again.events]
    assert contacts == [*missed, later]
    assert len({f["id"] for f in frames}) == len(frames) == 3
    assert all(stored[f["id"]].account_id == tenant.account_id for f in frames)


def test_a_malformed_last_event_id_is_422_naming_it(live_url, tenant):
    response = httpx.get(f"{live_url}/v0/events",
                         headers={**tenant.headers, "Last-Event-ID": "nonsense"})
    assert response.status_code == 422
    assert "Last-Event-ID" in response.json()["error"]["fields"]


def test_events_need_an_api_key(live_url):
    assert httpx.get(f"{live_url}/v0/events").status_code == 401
