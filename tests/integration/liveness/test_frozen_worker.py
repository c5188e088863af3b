"""A worker frozen (SIGSTOP) past the dead-after time and resumed (SIGCONT) while the worker
that took its contacts over is still at work (issue 25, part 3): real processes, slow
providers. The takeover must really happen, and the resumed worker must act on nothing it
lost: one number per contact, one capture, one event each."""

from __future__ import annotations

import os
import signal
import time

from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import all_terminal, dedicated, submit, wait_for

from worker.store.models import Contact, Event

PHONE = {"contact_type": "phone", "phone_country": "US"}
WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"}


def test_a_worker_frozen_past_dead_after_and_resumed_acts_on_nothing_it_lost(
    spawn, psettings, service, make_tenant, sandbox, db
):
    settings = psettings.model_copy(update={
        "lease_s": 300, "worker_heartbeat_s": 0.5, "worker_dead_after_s": 3.0,
        "liveness_interval_s": 1.0, "reconcile_grace_s": 60.0,
        "sweep_interval_s": 3600.0,  # the invariants must hold by fencing, not by the sweep
    })
    sandbox.set_faults(latency_ms=1500, sender_online_after_s=0)
    tenant = make_tenant(assistants=6)
    dedicated(service, tenant)  # senders of their own: each contact frozen in its requests
    for i, assistant in enumerate(tenant.assistant_ids):
        submit(service, tenant, WHATSAPP if i % 3 == 0 else PHONE, assistant)
    frozen = spawn("worker", settings, "--concurrency", "6")
    spawn("beat", settings)

    def contacts():
        with db.read() as session:
            return session.execute(select(Contact)).scalars().all()

    # Every contact leased by the first worker, each of them inside a slow provider request.
    wait_for(lambda: all(c.lease_owner for c in contacts()), timeout=30, every=0.05)
    os.killpg(frozen.proc.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        spawn("worker", settings, "--concurrency", "6")
        # The takeover: every contact run again by the second worker, some still at work.
        wait_for(lambda: all(c.takeovers >= 1 for c in contacts()), timeout=30, every=0.05)
        assert time.monotonic() - stopped_at > settings.worker_dead_after_s
        assert any(c.status == "provisioning" for c in contacts())
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
    wait_for(lambda: all_terminal(db, 6), timeout=60)
    time.sleep(3)  # the resumed worker's requests and writes, whatever they are, are done

    assert check_invariants(db, sandbox) == {"active": 6}
    with db.read() as session:
        events = session.execute(select(Event.contact_id, Event.type)).all()
    assert sorted(t for _, t in events) == ["contact.active"] * 6
    # The resumed worker did wake up, and each write it tried under a lost lease was refused.
    assert frozen.proc.poll() is None
    frozen.stop()  # its log flushed
    print("\nresumed worker: writes refused", frozen.log.read_text().count("lease_lost"))
    assert "lease_lost" in frozen.log.read_text()
