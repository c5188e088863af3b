"""Worker liveness (issue 18, item 3): heartbeats in the database, the takeover of a dead
runner's leases without waiting for them to expire, and the lease as the arbiter."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import all_terminal, submit, wait_for

from worker.runtime.liveness import Heartbeat, take_over_dead_runners
from worker.store import pipeline as pipeline_store
from worker.store.models import Contact, WorkerHeartbeat

PHONE = {"contact_type": "phone", "phone_country": "US"}
LEASE_S = 300  # far longer than any test here waits: only a takeover can free a lease


def lease(db, cid, owner, now, lease_s=LEASE_S):
    with db.write() as session:
        assert pipeline_store.take_lease(session, cid, owner, now, lease_s) is not None


def lease_of(db, cid):
    with db.read() as session:
        row = session.get(Contact, cid)
        return row.lease_owner, row.lease_expires_at


def test_leases_of_a_worker_whose_heartbeat_stopped_are_taken_over(
    psettings, service, make_tenant, db
):
    tenant = make_tenant()
    cid = submit(service, tenant, PHONE)
    now = datetime.now(UTC)
    lease(db, cid, "host-a:1:task-1", now - timedelta(seconds=20))
    Heartbeat(db, 1, ident="host-a:1", clock=lambda: now - timedelta(seconds=16)).beat()
    assert take_over_dead_runners(db, now, 15, LEASE_S) == [(cid, None)]
    owner, expires = lease_of(db, cid)
    assert expires < now  # the next runner takes it at once, counted as a takeover
    with db.write() as session:
        taken = pipeline_store.take_lease(session, cid, "host-b:2:task-2", now, LEASE_S)
    assert taken is not None and taken.contact.takeovers == 1


def test_leases_of_a_worker_that_beats_are_left_alone(psettings, service, make_tenant, db):
    tenant = make_tenant()
    cid = submit(service, tenant, PHONE)
    now = datetime.now(UTC)
    lease(db, cid, "host-a:1:task-1", now - timedelta(seconds=60))
    Heartbeat(db, 1, ident="host-a:1", clock=lambda: now - timedelta(seconds=2)).beat()
    assert take_over_dead_runners(db, now, 15, LEASE_S) == []
    assert lease_of(db, cid)[0] == "host-a:1:task-1"


def test_a_lease_just_taken_is_not_judged_before_its_runner_could_beat(
    psettings, service, make_tenant, db
):
    tenant = make_tenant()
    cid = submit(service, tenant, PHONE)
    now = datetime.now(UTC)
    lease(db, cid, "runner-without-heartbeat", now - timedelta(seconds=5))
    assert take_over_dead_runners(db, now, 15, LEASE_S) == []


def test_a_runner_whose_lease_was_taken_over_cannot_write_under_it(
    psettings, service, make_tenant, db
):
    tenant = make_tenant()
    cid = submit(service, tenant, PHONE)
    now = datetime.now(UTC)
    lease(db, cid, "host-a:1:task-1", now - timedelta(seconds=20))
    take_over_dead_runners(db, now, 15, LEASE_S)  # no heartbeat at all: dead
    lease(db, cid, "host-b:2:task-2", now)
    with db.write() as session:  # the old runner was alive after all: refused
        started = pipeline_store.start_step(session, _first_step(db, cid), "host-a:1:task-1",
                                            now, LEASE_S)
    assert started is False
    assert lease_of(db, cid)[0] == "host-b:2:task-2"


def _first_step(db, cid):
    from worker.store.models import ContactStep

    with db.read() as session:
        return session.execute(select(ContactStep).where(ContactStep.contact_id == cid)
                               .order_by(ContactStep.position)).scalars().first()


def test_a_worker_process_keeps_a_heartbeat_while_it_runs(spawn, psettings, service,
                                                          make_tenant, db):
    settings = psettings.model_copy(update={"worker_heartbeat_s": 0.5})
    tenant = make_tenant()
    submit(service, tenant, PHONE)
    spawn("worker", settings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)

    def beats():
        with db.read() as session:
            return dict(session.execute(select(WorkerHeartbeat.id, WorkerHeartbeat.beat_at)).all())

    first = wait_for(beats, timeout=10)
    time.sleep(1.5)
    later = beats()
    assert set(first) == set(later) and all(later[k] > first[k] for k in first)


def test_contacts_of_a_sigkilled_worker_run_again_long_before_its_leases_expire(
    spawn, psettings, service, make_tenant, sandbox, db
):
    settings = psettings.model_copy(update={
        "lease_s": LEASE_S, "worker_heartbeat_s": 1.0, "worker_dead_after_s": 3.0,
        "liveness_interval_s": 1.0, "reconcile_grace_s": 60.0,
    })
    sandbox.set_faults(latency_ms=1500)  # every provider call is slow: kills land mid-step
    tenant = make_tenant(assistants=6)
    for assistant in tenant.assistant_ids:
        submit(service, tenant, PHONE, assistant)
    worker = spawn("worker", settings, "--concurrency", "6")

    def leased():
        with db.read() as session:
            return session.execute(select(Contact.id).where(Contact.lease_owner.is_not(None))
                                   ).scalars().all()

    # Every contact leased: each is inside a provider request when the kill lands (the lease
    # comes before a run's first request; tests/integration/liveness/test_kill_anywhere.py
    # kills with contacts queued and releasing too).
    wait_for(lambda: len(leased()) == 6, timeout=30, every=0.05)
    worker.kill()
    sandbox.set_faults(latency_ms=0)
    killed_at = time.monotonic()
    spawn("beat", settings)
    spawn("worker", settings, "--concurrency", "6")
    wait_for(lambda: all_terminal(db, 6), timeout=60)
    assert time.monotonic() - killed_at < 60 < LEASE_S
    assert check_invariants(db, sandbox) == {"active": 6}
    with db.read() as session:
        assert sum(session.execute(select(Contact.takeovers)).scalars()) >= 1


def test_a_new_worker_is_ready_and_beating_before_its_first_task(spawn, psettings, db):
    # The pools, the provider clients and the heartbeat are built at start, not by the first
    # task: a worker with nothing to do is already in the table.
    spawn("worker", psettings, "--concurrency", "2")

    def beating():
        with db.read() as session:
            return session.execute(select(WorkerHeartbeat.id)).scalars().all()

    assert len(wait_for(beating, timeout=20)) == 1


def test_after_a_worker_dies_the_messages_it_may_have_held_are_published_again_once(
    psettings, service, make_tenant, db
):
    from worker.runtime.liveness import orphaned_messages

    tenant = make_tenant(assistants=3)
    queued, scheduled, running = (submit(service, tenant, PHONE, a) for a in tenant.assistant_ids)
    now = datetime.now(UTC)
    lease(db, scheduled, "host-a:1:task-1", now)
    with db.write() as session:  # a retry due in 20 s, held as a countdown by host-a
        pipeline_store.release_lease(session, scheduled, "host-a:1:task-1",
                                     now + timedelta(seconds=20 + 60))
    lease(db, running, "host-b:2:task-2", now)  # another worker's run: the lease covers it
    Heartbeat(db, 1, ident="host-b:2", clock=lambda: now).beat()
    assert orphaned_messages(db, now, 15, 60, 100) == []  # nobody died
    Heartbeat(db, 1, ident="host-a:1", clock=lambda: now - timedelta(seconds=16)).beat()
    found = {cid: (batch, round(due)) for cid, batch, due in
             orphaned_messages(db, now, 15, 60, 100)}
    assert found == {queued: (None, 0), scheduled: (None, 20)}
    assert orphaned_messages(db, now, 15, 60, 100) == []  # each death once
