"""The API's first-run hint: a new phone or WhatsApp contact's task message carries the input
of its number search; the worker takes the lease and journals the new run on it in one
statement, before it reads the contact's row and before any provider request."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import dedicated, drive, submit

from worker.domain.contacts import ContactType, FirstRun
from worker.store import pipeline as store
from worker.store.models import Contact, ContactStep

PHONE = {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"}
EMAIL = {"contact_type": "email", "email_local": "ada", "first_name": "Ada", "last_name": "L"}
WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"}
US_HINT = FirstRun(ContactType.PHONE, "US", bulk=False)


def queued(redis_url: str, queue: str = "interactive") -> list[dict]:
    """The provisioning messages waiting in `queue`, oldest first: headers and arguments."""
    client = redis.Redis.from_url(redis_url)
    messages = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        messages.append({"headers": message["headers"], "args": args})
    return messages


def steps_of(db, contact_id: str) -> list[tuple[str, str, int]]:
    with db.read() as session:
        rows = session.execute(
            select(ContactStep).where(ContactStep.contact_id == contact_id)
            .order_by(ContactStep.position)
        ).scalars()
        return [(s.name, s.status, s.attempts) for s in rows]


def test_a_new_contacts_task_message_carries_its_search_input(service, tenant, psettings):
    phone = submit(service, tenant, PHONE)
    dedicated(service, tenant)  # a sender of its own
    whatsapp = submit(service, tenant, WHATSAPP)
    email = submit(service, tenant, EMAIL)
    messages = {m["args"][0]: m["headers"] for m in queued(psettings.redis_url)}
    assert messages[phone]["first_run"] == {"type": "phone", "country": "US", "bulk": False}
    assert messages[whatsapp]["first_run"] == {"type": "whatsapp", "country": "US", "bulk": False}
    assert "first_run" not in messages[email]  # its first step writes: no search ahead
    assert FirstRun.from_header(messages[phone]["first_run"]) == US_HINT


def test_a_run_with_the_hint_takes_its_lease_before_reading_the_row(
    service, pipeline, tenant, sandbox, db, monkeypatch
):
    cid = submit(service, tenant, PHONE)

    def no_read(*_args, **_kwargs):
        raise AssertionError("the row was read before the lease")

    monkeypatch.setattr(store, "peek", no_read)
    assert pipeline.run(cid, "runner", US_HINT).state == "active"
    assert steps_of(db, cid) == [("find_number", "done", 1), ("buy_number", "done", 1)]
    assert sandbox.stats()["requests"] == 2
    with db.read() as session:
        assert session.get(Contact, cid).address.startswith("+1")
    check_invariants(db, sandbox)


def test_a_redelivered_message_with_the_hint_does_not_journal_its_search(
    service, pipeline, tenant, sandbox, db
):
    cid = submit(service, tenant, PHONE)
    # A first runner took the lease, started the search and died: its lease has expired.
    with db.write() as session:
        assert store.take_lease(session, cid, "dead", datetime.now(UTC) - timedelta(hours=1), 60)
    assert pipeline.run(cid, "runner", US_HINT).state == "active"
    # The journal's search is the runner's own, its second attempt (the dead runner's was the
    # first), and one number was bought: no search was made on the hint.
    assert steps_of(db, cid) == [("find_number", "done", 2), ("buy_number", "done", 1)]
    assert sandbox.stats()["requests"] == 2
    assert len(sandbox.resources()["phone_numbers"]) == 1
    check_invariants(db, sandbox)


def test_a_hint_for_a_finished_contact_changes_nothing(service, pipeline, tenant, sandbox, db):
    cid = submit(service, tenant, PHONE)
    assert drive(pipeline, cid) == "active"
    before = sandbox.stats()["requests"]
    assert pipeline.run(cid, "late", US_HINT).state == "busy"
    assert sandbox.stats()["requests"] == before  # the lease refused: no request at all
    assert steps_of(db, cid) == [("find_number", "done", 1), ("buy_number", "done", 1)]
    assert check_invariants(db, sandbox) == {"active": 1}


def test_a_hint_of_another_type_than_the_row_still_gets_the_rows_own_journal(
    service, pipeline, tenant, sandbox, db
):
    cid = submit(service, tenant, PHONE)
    wrong = FirstRun(ContactType.WHATSAPP, "US", bulk=False)
    assert drive_first(pipeline, cid, wrong) == "active"
    # The phone's own plan ran: its own journal, one number, no sender.
    assert steps_of(db, cid) == [("find_number", "done", 1), ("buy_number", "done", 1)]
    assert len(sandbox.resources()["phone_numbers"]) == 1
    assert sandbox.resources()["senders"] == []
    check_invariants(db, sandbox)


def test_a_hint_for_a_contact_cancelled_before_it_ran_releases_it(
    service, pipeline, tenant, sandbox, db
):
    from worker.app.lifecycle import LifecycleService

    cid = submit(service, tenant, PHONE)
    lifecycle = LifecycleService(db, service.settings, service.publisher)
    assert lifecycle.delete(tenant.account_id, tenant.assistant_ids[0], cid).status == 202
    assert drive_first(pipeline, cid, US_HINT) == "deleted"
    assert sandbox.resources()["phone_numbers"] == []
    assert check_invariants(db, sandbox) == {"deleted": 1}


def drive_first(pipeline, contact_id: str, hint: FirstRun) -> str:
    """The first delivery with `hint`, then the later ones (without) until it settles."""
    import time

    outcome = pipeline.run(contact_id, "runner", hint)
    for _ in range(100):
        if outcome.again_in_s is None:
            return outcome.state
        time.sleep(outcome.again_in_s)
        outcome = pipeline.run(contact_id, "runner")
    raise AssertionError("contact did not settle")
