"""The pipeline on real worker processes, a real Redis broker and the sandbox over HTTP:
end to end, under dropped answers, killed workers, a flushed broker and racing workers."""

from __future__ import annotations

import json
import subprocess
import sys

import redis
from sqlalchemy import func, select
from support.invariants import check_invariants
from support.pipeline import all_terminal, dedicated, statuses, submit, wait_for
from support.services import settings_env
from test_steps_in_process import EMAIL, PHONE, WHATSAPP

from worker.runtime.celery_app import PROVISION_TASK, create_celery
from worker.store.models import Contact, ContactStep, LedgerEntry


def test_each_type_goes_active_through_a_worker(spawn, psettings, service, make_tenant, sandbox, db):
    tenant = make_tenant(assistants=1)
    ids = [submit(service, tenant, body) for body in (PHONE, EMAIL, WHATSAPP)]
    worker = spawn("worker", psettings, "--concurrency", "4")
    wait_for(lambda: all_terminal(db, 3), timeout=60)
    assert set(statuses(db).values()) == {"active"}
    assert check_invariants(db, sandbox) == {"active": 3}
    with db.read() as session:
        addresses = dict(session.execute(select(Contact.id, Contact.address)).all())
    assert addresses[ids[1]] == "ada@assistants.example.com"

    # Logs: JSON lines with the contact, assistant, task, step and attempt bound to every
    # line of a step; no phone number, name or token in clear.
    worker.stop()
    lines = [json.loads(line) for line in worker.log.read_text().splitlines()
             if line.startswith("{")]
    step_lines = [e for e in lines if e["event"] in ("step_done", "step_waiting")]
    assert {e["contact_id"] for e in step_lines} == set(ids)
    for event in step_lines:
        assert {"contact_id", "assistant_id", "task_id", "step", "attempt"} <= set(event)
    text = worker.log.read_text()
    numbers = [a for a in addresses.values() if a.startswith("+")]
    for secret in ("+14155552671", "sandbox-token", *numbers):
        assert secret not in text, secret


def test_drop_after_commit_on_every_create_gives_one_resource_and_one_charge(
    spawn, psettings, service, make_tenant, sandbox, db
):
    # Every POST/DELETE really happens at the provider and then its answer is lost.
    sandbox.set_faults(drop_after_commit_rate=1.0, sender_online_after_s=0.3)
    tenant = make_tenant(assistants=4)
    for assistant in tenant.assistant_ids:
        for body in (PHONE, EMAIL, WHATSAPP):
            submit(service, tenant, {**body, "email_local": f"user{assistant}"}, assistant)
    spawn("worker", psettings, "--concurrency", "8")
    wait_for(lambda: all_terminal(db, 12), timeout=90)
    assert check_invariants(db, sandbox) == {"active": 12}
    with db.read() as session:
        captures = session.execute(select(func.count()).select_from(LedgerEntry)
                                   .where(LedgerEntry.kind == "capture")).scalar_one()
        retried = session.execute(select(func.count()).select_from(ContactStep)
                                  .where(ContactStep.attempts > 1)).scalar_one()
    assert captures == 12
    assert retried >= 12  # each create was answered with a failure and adopted on retry


def test_worker_killed_halfway_through_200_contacts_finishes_all_after_restart(
    spawn, psettings, service, make_tenant, sandbox, db
):
    sandbox.set_faults(latency_ms=30, sender_online_after_s=0.2)
    tenant = make_tenant(credits_cents=100_000, assistants=100)
    for assistant in tenant.assistant_ids:
        submit(service, tenant, PHONE, assistant)
        submit(service, tenant, {**EMAIL, "email_local": f"a{assistant}"}, assistant)
    settings = psettings.model_copy(update={"lease_s": 3})
    worker = spawn("worker", settings, "--concurrency", "16")

    def active_count():
        return sum(1 for s in statuses(db).values() if s == "active")

    wait_for(lambda: active_count() >= 60, timeout=120, every=0.05)
    worker.kill()
    assert active_count() < 200
    spawn("worker", settings, "--concurrency", "16")
    spawn("beat", settings)
    wait_for(lambda: all_terminal(db, 200), timeout=180)
    assert check_invariants(db, sandbox) == {"active": 200}
    with db.read() as session:  # the kill really interrupted contacts mid-flight
        assert session.execute(select(func.sum(Contact.takeovers))).scalar_one() >= 1


def test_flushed_broker_mid_run_is_recovered_by_the_reconciler(
    spawn, psettings, service, make_tenant, sandbox, db, redis_url
):
    sandbox.set_faults(latency_ms=30)
    tenant = make_tenant(credits_cents=100_000, assistants=100)
    for assistant in tenant.assistant_ids:
        submit(service, tenant, PHONE, assistant)
    spawn("worker", psettings, "--concurrency", "4")
    wait_for(lambda: sum(1 for s in statuses(db).values() if s == "active") >= 10, timeout=60,
             every=0.05)
    redis.Redis.from_url(redis_url).flushdb()
    assert not all_terminal(db, 100)
    spawn("beat", psettings)
    wait_for(lambda: all_terminal(db, 100), timeout=180)
    assert check_invariants(db, sandbox) == {"active": 100}


def test_two_workers_racing_on_one_contact_run_its_steps_once(
    spawn, psettings, service, tenant, sandbox, db
):
    sandbox.set_faults(latency_ms=200, sender_online_after_s=0.1)
    dedicated(service, tenant)  # a sender of its own
    cid = submit(service, tenant, WHATSAPP)
    app = create_celery(psettings)
    for _ in range(5):  # the same message delivered again and again
        app.send_task(PROVISION_TASK, args=[cid], queue="interactive")
    spawn("worker", psettings, "--concurrency", "4")
    spawn("worker", psettings, "--concurrency", "4")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    with db.read() as session:
        steps = dict(session.execute(select(ContactStep.name, ContactStep.attempts)
                                     .where(ContactStep.contact_id == cid)).all())
    assert {k: v for k, v in steps.items() if k != "await_sender_online"} == {
        "find_number": 1, "buy_number": 1, "create_sender": 1}
    assert check_invariants(db, sandbox) == {"active": 1}
    creates = [r for r in sandbox.resources()["phone_numbers"]]
    assert len(creates) == 1


def test_contact_whose_publish_was_lost_is_enqueued_by_the_reconciler(
    spawn, psettings, db, make_tenant, sandbox
):
    from worker.app.contacts import ContactService

    class LostPublish:
        def provision(self, contact_id, *, queue):
            raise ConnectionError("broker unreachable")

    tenant = make_tenant()
    lost = ContactService(db, psettings, LostPublish())
    submit(lost, tenant, PHONE)
    spawn("worker", psettings, "--concurrency", "2")
    spawn("beat", psettings)
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    assert check_invariants(db, sandbox) == {"active": 1}


def test_operator_lists_failed_contacts_and_retries_one(
    spawn, psettings, service, tenant, sandbox, db
):
    from worker.providers import GoogleDirectory

    with GoogleDirectory.from_settings(psettings) as directory:
        squatter = directory.insert_user("ada@assistants.example.com", "O", "P", "someone-else")
    cid = submit(service, tenant, EMAIL)
    spawn("worker", psettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    env = settings_env(psettings)
    cli = [sys.executable, "-m", "worker.cli"]
    listed = json.loads(subprocess.run([*cli, "jobs", "failed", "--json"], env=env, check=True,
                                       capture_output=True, text=True).stdout)
    assert [(r["id"], r["error"]["code"]) for r in listed["failed"]] == [(cid, "email_taken")]
    with GoogleDirectory.from_settings(psettings) as directory:
        directory.delete_user(squatter.id)
    subprocess.run([*cli, "jobs", "retry", cid, "--json"], env=env, check=True,
                   capture_output=True)
    wait_for(lambda: statuses(db)[cid] == "active", timeout=60)
    assert check_invariants(db, sandbox) == {"active": 1}
    with db.read() as session:
        kinds = session.execute(select(LedgerEntry.kind).where(LedgerEntry.contact_id == cid)
                                .order_by(LedgerEntry.id)).scalars().all()
    assert kinds == ["reserve", "release", "reserve", "capture"]


def test_worker_serves_interactive_before_bulk(spawn, psettings, make_tenant, db, sandbox):
    from worker.app.contacts import ContactService

    class Held:  # publish nothing at submit time; the test publishes below
        def provision(self, contact_id, *, queue):
            pass

    sandbox.set_faults(latency_ms=20)
    tenant = make_tenant(assistants=25)
    held = ContactService(db, psettings, Held())
    bulk = [submit(held, tenant, PHONE, a) for a in tenant.assistant_ids[:20]]
    urgent = [submit(held, tenant, PHONE, a) for a in tenant.assistant_ids[20:]]
    app = create_celery(psettings)
    for cid in bulk:
        app.send_task(PROVISION_TASK, args=[cid], queue="bulk")
    for cid in urgent:
        app.send_task(PROVISION_TASK, args=[cid], queue="interactive")
    spawn("worker", psettings, "--concurrency", "1")
    wait_for(lambda: all_terminal(db, 25), timeout=90)
    with db.read() as session:
        finished = session.execute(select(Contact.id).order_by(Contact.updated_at)).scalars().all()
    # All five interactive contacts first (one bulk message may already be in hand); taking
    # the queues in turn would put them at every other place.
    assert max(finished.index(cid) for cid in urgent) <= 5


def _children(parent, count):
    import psutil

    own = psutil.Process(parent.pid).cmdline()

    def found():
        children = psutil.Process(parent.pid).children()
        # A child forked but not yet exec'd still shows the parent's command line.
        started = [c for c in children if c.cmdline() != own]
        return started if len(started) == count == len(children) else None

    return wait_for(found, timeout=30)


def test_a_worker_group_spreads_its_threads_over_processes_and_stops_them_all(
    spawn, psettings, service, make_tenant, sandbox, db
):
    import os
    import signal

    import psutil

    tenant = make_tenant(assistants=6)
    group = spawn("worker", psettings, "--processes", "2", "--concurrency", "5")
    children = _children(group.proc, 2)
    threads = sorted(c.cmdline()[c.cmdline().index("--concurrency") + 1] for c in children)
    assert threads == ["2", "3"]
    for assistant in tenant.assistant_ids:
        submit(service, tenant, PHONE, assistant)
    wait_for(lambda: all_terminal(db, 6), timeout=60)
    assert check_invariants(db, sandbox) == {"active": 6}

    os.kill(group.proc.pid, signal.SIGTERM)  # the parent only, as Kubernetes does
    assert group.proc.wait(30) == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_a_worker_group_whose_child_dies_stops_the_rest_and_fails(spawn, psettings):
    import psutil

    group = spawn("worker", psettings, "--processes", "2", "--concurrency", "2")
    children = _children(group.proc, 2)
    children[0].kill()
    assert group.proc.wait(30) != 0  # so its supervisor restarts the whole group
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_a_worker_group_needs_a_thread_per_process(psettings):
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", "--processes", "3", "--concurrency", "2"],
        env=settings_env(psettings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--concurrency" in done.stderr and "less than --processes 3" in done.stderr
