"""A frozen runner never acts on a contact it lost (issue 25, part 3).

Each test freezes runner A at one exact point of its run (the pipeline's checkpoint hook, a
threading barrier), lets the liveness takeover give the contact to runner B as it would after
A's worker went silent past the dead-after time, lets B run, then resumes A. Real database,
the sandbox over HTTP. What A must not do once resumed: buy, create or release anything,
write over B's journal, charge, or write an event.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from support.invariants import check_invariants
from support.pipeline import FAST, dedicated, drive, submit, wait_for
from support.services import TEST_DATABASE_URL

from worker.app.lifecycle import LifecycleService
from worker.providers import Providers
from worker.runtime.pipeline import Outcome, Pipeline
from worker.store import liveness
from worker.store import pipeline as store
from worker.store.db import Database
from worker.store.journal import LeaseLost
from worker.store.models import Contact, ContactStep, Event, LedgerEntry, PoolRoute, PoolSender

PHONE = {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"}
WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"}
A, B = "worker-a:1:task-a", "worker-b:2:task-b"
# The tests take the lease over at once where a real takeover waits `worker_dead_after_s`:
# the runner's re-check (`lease_recheck_s`) is kept as far below that as the default is.
FENCING = {**FAST, "worker_dead_after_s": 2.0, "lease_recheck_s": 0.05}


class Freeze:
    """Installed as `pipeline.checkpoint`: runner `owner` stops at `point` (once) until
    `resume()`; every other runner and point passes. `on_reach` runs as it stops."""

    def __init__(self, pipeline: Pipeline, point: str, owner: str = A, on_reach=None) -> None:
        self.point, self.owner, self.on_reach = point, owner, on_reach
        self.reached, self._resume = threading.Event(), threading.Event()
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        pipeline.checkpoint = self
        self.pipeline = pipeline

    def __call__(self, point: str, contact_id: str, owner: str) -> None:
        if point == self.point and owner == self.owner and not self.reached.is_set():
            if self.on_reach is not None:
                self.on_reach()
            self._reached_at = time.monotonic()
            self.reached.set()
            assert self._resume.wait(60), "never resumed"

    def start(self, contact_id: str) -> Freeze:
        def run() -> None:
            try:
                self.outcome = self.pipeline.run(contact_id, self.owner)
            except BaseException as exc:  # reported by `resume`
                self.error = exc

        self._thread = threading.Thread(target=run, name="frozen-runner", daemon=True)
        self._thread.start()
        assert self.reached.wait(30), f"runner A never reached {self.point}"
        return self

    def resume(self) -> Outcome:
        # A real takeover comes only after the worker was silent `worker_dead_after_s`, far
        # longer than the runner's re-check bound; the test's takeover is at once, so the
        # freeze is made to last longer than that bound at least.
        time.sleep(max(0.0, self._reached_at + 10 * FENCING["lease_recheck_s"] - time.monotonic()))
        self._resume.set()
        assert self._thread is not None
        self._thread.join(30)
        assert not self._thread.is_alive(), "runner A did not finish after resuming"
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


def take_over(db, settings, contact_id: str) -> None:
    """What beat's liveness check does once A's worker (no heartbeat) has been silent past
    the dead-after time: A's lease is aged by that much, then taken over for real."""
    now = datetime.now(UTC)
    aged = now + timedelta(seconds=settings.lease_s - settings.worker_dead_after_s - 1)
    with db.write() as session:
        session.execute(update(Contact).where(Contact.id == contact_id,
                                              Contact.lease_owner == A)
                        .values(lease_expires_at=aged))
    with db.write() as session:
        taken = liveness.take_over_dead(session, now, settings.worker_dead_after_s,
                                        settings.lease_s)
    assert [cid for cid, _ in taken] == [contact_id]


def journal(db, contact_id: str) -> list[tuple]:
    with db.read() as session:
        return [
            (s.name, s.status, s.attempts, s.provider_id, s.detail, s.updated_at)
            for s in session.execute(
                select(ContactStep).where(ContactStep.contact_id == contact_id)
                .order_by(ContactStep.position)
            ).scalars()
        ]


def money_and_events(db, contact_id: str) -> tuple[list, list]:
    with db.read() as session:
        ledger = sorted(
            e.kind
            for e in session.execute(
                select(LedgerEntry).where(LedgerEntry.contact_id == contact_id)).scalars()
        )
        events = sorted(e.type for e in session.execute(
            select(Event).where(Event.contact_id == contact_id)).scalars())
    return ledger, events


@pytest.fixture
def fsettings(make_settings, sandbox):
    return make_settings(sandbox_url=sandbox.url, **FENCING)


@pytest.fixture
def make_pipeline(fsettings, db):
    made = []

    def make(**overrides) -> Pipeline:
        settings = fsettings.model_copy(update=overrides)
        providers = Providers.from_settings(settings)
        made.append(providers)
        return Pipeline(db, providers, settings)

    yield make
    for providers in made:
        providers.close()


def sent(sandbox, *pipelines: Pipeline) -> int:
    """The requests the sandbox has had, once the background searches the pipelines' number
    pools started (a top-up below the low water) have finished."""
    for pipeline in pipelines:
        if pipeline.number_pool is not None:
            pipeline.number_pool.settle()
    return int(sandbox.stats()["requests"])


def numbers_of(sandbox, contact_id: str) -> list[str]:
    return [n["address"] for n in sandbox.resources()["phone_numbers"] if n["tag"] == contact_id]


def test_frozen_between_its_lease_and_its_purchase_buys_nothing_once_resumed(
    service, make_pipeline, fsettings, tenant, sandbox, db
):
    """The freeze of the issue: the lease taken (the purchase started as attempt 1), the
    runner frozen before its buy. The runner that takes over buys; the resumed one must not
    buy a second number with the same tag (it used to skip the look-up on its in-memory
    attempt 1, and nothing checked the lease before the buy)."""
    pipeline = make_pipeline()
    cid = submit(service, tenant, PHONE)
    frozen = Freeze(pipeline, "before_create").start(cid)
    take_over(db, fsettings, cid)
    assert drive(pipeline, cid, B) == "active"
    after_b = journal(db, cid)
    requests = sent(sandbox, pipeline)

    assert frozen.resume().state == "busy"
    assert sent(sandbox, pipeline) == requests  # A sent nothing once resumed
    assert len(numbers_of(sandbox, cid)) == 1
    assert journal(db, cid) == after_b
    ledger, events = money_and_events(db, cid)
    assert ledger == ["capture", "reserve"] and events == ["contact.active"]
    assert check_invariants(db, sandbox) == {"active": 1}


def test_frozen_after_its_purchase_does_not_write_over_the_new_owners_journal(
    service, make_pipeline, fsettings, tenant, sandbox, db
):
    """A bought its number, then froze before journaling it. B's purchase (attempt 2) looks
    up by tag and adopts that number, and goes on to the sender. A's journal write (the
    purchase done, the sender started) is refused in the statement itself: B's rows stay as
    B wrote them, and A stops."""
    pipeline = make_pipeline()
    sandbox.set_faults(sender_online_after_s=0)
    dedicated(service, tenant)  # a sender of its own
    cid = submit(service, tenant, WHATSAPP)
    frozen = Freeze(pipeline, "after_request").start(cid)  # the first request under the lease
    take_over(db, fsettings, cid)
    assert drive(pipeline, cid, B) == "active"
    after_b = journal(db, cid)
    requests = sent(sandbox, pipeline)

    assert frozen.resume().state == "busy"
    assert journal(db, cid) == after_b
    assert sent(sandbox, pipeline) == requests
    resources = sandbox.resources()
    assert len(numbers_of(sandbox, cid)) == 1 and len(resources["senders"]) == 1
    ledger, events = money_and_events(db, cid)
    assert ledger == ["capture", "reserve"] and events == ["contact.active"]
    assert check_invariants(db, sandbox) == {"active": 1}


def test_frozen_before_marking_failed_does_not_compensate_the_new_owners_number(
    service, make_pipeline, fsettings, tenant, sandbox, db
):
    """A's purchase failed for good (its retries spent), and A froze before recording the
    error. B took over, bought and activated (charged). Resumed, A's `mark_failing` is
    refused: A stops, and B's number stays (it used to compensate anyway, deleting every
    number with the tag)."""
    a_pipeline = make_pipeline(step_max_attempts=1)
    b_pipeline = make_pipeline()
    cid = submit(service, tenant, PHONE)
    frozen = Freeze(a_pipeline, "before_fail")
    a_pipeline.checkpoint = lambda point, c, owner: (  # the purchase meets 503s
        sandbox.set_faults(error_rate=1.0, error_status=503)
        if point == "before_create" and owner == A else frozen(point, c, owner))
    frozen.start(cid)
    sandbox.set_faults(error_rate=0.0)
    take_over(db, fsettings, cid)
    assert drive(b_pipeline, cid, B) == "active"
    (number,) = numbers_of(sandbox, cid)
    requests = sent(sandbox, a_pipeline, b_pipeline)

    assert frozen.resume().state == "busy"
    assert sent(sandbox, a_pipeline, b_pipeline) == requests
    assert numbers_of(sandbox, cid) == [number]
    with db.read() as session:
        row = session.get(Contact, cid)
    assert (row.status, row.error_code, row.address) == ("active", None, number)
    ledger, events = money_and_events(db, cid)
    assert ledger == ["capture", "reserve"] and events == ["contact.active"]
    assert check_invariants(db, sandbox) == {"active": 1}


def test_frozen_before_compensating_leaves_the_clean_up_to_the_new_owner(
    service, make_pipeline, fsettings, tenant, sandbox, db
):
    """A's purchase failed for good and A recorded the error, then froze before
    compensating. B took over and compensated (the contact `failed`, its reservation given
    back once, one `contact.failed`). Resumed, A renews its lease first, finds it gone, and
    stops: no request, no second event or release."""
    a_pipeline = make_pipeline(step_max_attempts=1)
    b_pipeline = make_pipeline()
    cid = submit(service, tenant, PHONE)
    # The search succeeds; the purchase meets 503s until A has given up.
    frozen = Freeze(a_pipeline, "before_compensate")
    a_pipeline.checkpoint = lambda point, c, owner: (
        sandbox.set_faults(error_rate=1.0, error_status=503)
        if point == "before_create" and owner == A else frozen(point, c, owner))
    frozen.start(cid)
    sandbox.set_faults(error_rate=0.0)
    take_over(db, fsettings, cid)
    assert drive(b_pipeline, cid, B) == "failed"
    after_b = journal(db, cid)
    requests = sent(sandbox, a_pipeline, b_pipeline)

    assert frozen.resume().state == "busy"
    assert sent(sandbox, a_pipeline, b_pipeline) == requests
    assert journal(db, cid) == after_b
    ledger, events = money_and_events(db, cid)
    assert ledger == ["release", "reserve"] and events == ["contact.failed"]
    assert check_invariants(db, sandbox) == {"failed": 1}


def pool_routes(db) -> dict[str, int]:
    with db.read() as session:
        return {r.contact_id: r.pool_sender_id for r in session.execute(select(PoolRoute)).scalars()}


def test_frozen_before_taking_a_pool_route_takes_none_once_resumed(
    service, make_pipeline, fsettings, tenant, sandbox, db
):
    """A confirmed its lease and froze just before taking its route on the shared sender pool.
    B took over, the contact went active on a pool sender, its user deleted it and B released
    the route. A, resumed, must not route the user again: a route of a contact that is gone
    would hold that user's place on the sender for ever (a user has one route per sender)."""
    sandbox.set_faults(sender_online_after_s=0)
    pipeline = make_pipeline()
    cid = submit(service, tenant, WHATSAPP)  # no WABA of the account's own: the pool
    reached, resume = threading.Event(), threading.Event()
    take = pipeline.pool.take

    def frozen_take(contact, owner, *args, **kwargs):
        if owner == A and not reached.is_set():
            reached.set()
            assert resume.wait(60), "never resumed"
        return take(contact, owner, *args, **kwargs)

    pipeline.pool.take = frozen_take
    outcome: list[object] = []
    runner = threading.Thread(target=lambda: outcome.append(_run_catching(pipeline, cid, A)))
    runner.start()
    assert reached.wait(30), "runner A never reached the pool"
    take_over(db, fsettings, cid)
    assert drive(pipeline, cid, B) == "active"
    assert cid in pool_routes(db)
    lifecycle = LifecycleService(db, service.settings, service.publisher)
    assert lifecycle.delete(tenant.account_id, tenant.assistant_ids[0], cid).status == 202
    assert drive(pipeline, cid, B) == "deleted"
    assert pool_routes(db) == {}

    resume.set()
    runner.join(30)
    assert outcome and getattr(outcome[0], "state", outcome[0]) == "busy", outcome
    assert pool_routes(db) == {}  # A took no route for the deleted contact
    ledger, events = money_and_events(db, cid)
    assert events == ["contact.active", "contact.deleted"]
    assert check_invariants(db, sandbox) == {"deleted": 1}


def _run_catching(pipeline: Pipeline, contact_id: str, owner: str) -> object:
    try:
        return pipeline.run(contact_id, owner)
    except LeaseLost as exc:
        return exc


def test_every_pool_write_of_a_runner_that_lost_the_lease_is_refused(
    service, make_pipeline, fsettings, tenant, sandbox, db
):
    """Each write of the sender pool is fenced by the lease's owner in its own transaction:
    A, taken over, changes neither the routes nor the senders, whatever it asks."""
    sandbox.set_faults(sender_online_after_s=600)  # the sender stays growing
    pipeline = make_pipeline()
    cid = submit(service, tenant, WHATSAPP)
    assert pipeline.run(cid, A).state == "wait"  # A grows the pool's first sender
    with db.write() as session:  # A's lease, as A's runs leave it between two looks
        assert store.take_lease(session, cid, A, datetime.now(UTC), 60)
    take_over(db, fsettings, cid)
    with db.write() as session:  # and B's run leases it
        assert store.take_lease(session, cid, B, datetime.now(UTC), 60)

    def pool_rows() -> tuple:
        with db.read() as session:
            return (
                pool_routes(db),
                [(s.id, s.status, s.number_sid, s.sender_sid, s.error)
                 for s in session.execute(select(PoolSender)).scalars()],
            )

    before = pool_rows()
    sender_id = before[1][0][0]
    with db.read() as session:
        contact = session.get(Contact, cid)
    now = datetime.now(UTC)
    access = pipeline.pool
    writes = [
        lambda: access.take(contact, A, "+14155550000", now, may_grow=True),
        lambda: access.record_growth(cid, A, sender_id, now, sender_sid="XE" + "0" * 32),
        lambda: access.mark_online(cid, A, sender_id, now),
        lambda: access.mark_failed(cid, A, sender_id, "frozen", now),
        lambda: access.release_route(cid, A),
    ]
    for write in writes:
        with pytest.raises(LeaseLost):
            write()
    assert pool_rows() == before
    # B, who holds the lease now, may.
    assert access.release_route(cid, B) == 1


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="row locks and session timeouts: PostgreSQL")
def test_frozen_inside_a_transaction_holds_no_takeover_up(
    service, make_pipeline, fsettings, tenant, sandbox, db
):
    """A froze inside a write transaction (its purchase journaled, the contact's row locked,
    not yet committed). The liveness takeover skips that row instead of waiting behind it,
    and takes over another dead runner's contact at once; the server ends A's idle session
    after `db_idle_in_transaction_timeout_ms`, and the next pass takes A's contact over. A,
    resumed, finds its connection gone: nothing of its transaction was committed."""
    bounded = fsettings.model_copy(
        update={"db_lock_timeout_ms": 500, "db_idle_in_transaction_timeout_ms": 1500})
    a_db = Database(bounded.database_url, lock_timeout_ms=500,
                    idle_in_transaction_timeout_ms=1500)
    a_providers = Providers.from_settings(bounded)
    a_pipeline = Pipeline(a_db, a_providers, bounded)
    try:
        sandbox.set_faults(sender_online_after_s=0)
        dedicated(service, tenant)  # a sender of its own
        cid = submit(service, tenant, WHATSAPP)
        other = submit(service, tenant, PHONE)
        with db.write() as session:  # a second dead runner's contact
            assert store.take_lease(session, other, "worker-c:3:task-c", datetime.now(UTC), 60)
        frozen = Freeze(a_pipeline, "in_transaction").start(cid)

        def taken_over() -> list[str]:
            # Every lease counts as silent long enough (a lease_s far beyond the real one).
            with db.write() as session:
                return [c for c, _ in liveness.take_over_dead(
                    session, datetime.now(UTC), fsettings.worker_dead_after_s,
                    fsettings.lease_s + 60)]

        started = time.monotonic()
        assert taken_over() == [other]
        assert time.monotonic() - started < 0.5  # not waiting behind A's lock
        assert wait_for(taken_over, timeout=10, every=0.2) == [cid]
        b_pipeline = make_pipeline()
        assert drive(b_pipeline, cid, B) == "active"
        after_b = journal(db, cid)
        requests = sent(sandbox, a_pipeline, b_pipeline)
        with pytest.raises(DBAPIError):
            frozen.resume()
        assert journal(db, cid) == after_b
        assert sent(sandbox, a_pipeline, b_pipeline) == requests
        assert len(numbers_of(sandbox, cid)) == 1
    finally:
        a_providers.close()
        a_db.dispose()


@pytest.mark.parametrize(("body", "requests"), [
    (PHONE, 2),  # the search, the purchase (a cold number pool: its first taker searches)
    (WHATSAPP, 4),  # the search, the purchase, the sender, one look at it (online at once)
    ({"contact_type": "email", "email_local": "ada", "first_name": "Ada", "last_name": "L"},
     2),  # the insert, the read that confirms it
])
def test_the_fence_costs_no_provider_request(body, requests, service, pipeline, tenant, sandbox,
                                              db):
    """A run that nobody froze confirms its lease in the statements it makes anyway: no
    look-up by tag on a first attempt, no extra request (the same counts as before fencing)."""
    sandbox.set_faults(sender_online_after_s=0)
    dedicated(service, tenant)  # a sender of its own
    cid = submit(service, tenant, body)
    assert drive(pipeline, cid) == "active"
    assert sent(sandbox, pipeline) == requests
