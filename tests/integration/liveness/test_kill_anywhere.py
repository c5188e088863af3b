"""The worker SIGKILLed at any moment (issue 25, part 2): while contacts are inside their
first provider request (number search or purchase, user insert, sender create), while some
are queued and not yet taken, and while some are being released. Each group is terminal
within 30 s of the kill, with the production heartbeat, dead-after and liveness interval and
the reconciler's grace (60 s) out of reach; the times are printed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import submit, wait_for

from worker.app.lifecycle import LifecycleService
from worker.store.models import Contact

PHONE = {"contact_type": "phone", "phone_country": "US"}
WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"}
TERMINAL = ("active", "failed", "deleted")
PROMISE_S = 30.0


def email(i: int) -> dict:
    return {"contact_type": "email", "email_local": f"kill.{i}", "first_name": "Ada",
            "last_name": "L"}


def test_a_worker_killed_at_any_moment_recovers_every_group_within_30_s(
    spawn, psettings, service, make_tenant, sandbox, db
):
    settings = psettings.model_copy(update={
        "lease_s": 120, "worker_heartbeat_s": 3.0, "worker_dead_after_s": 15.0,
        "liveness_interval_s": 5.0, "reconcile_grace_s": 60.0, "reconcile_interval_s": 30.0,
    })
    tenant = make_tenant(credits_cents=100_000, assistants=14)
    assistants = iter(tenant.assistant_ids)
    sandbox.set_faults(sender_online_after_s=0)
    beat = spawn("beat", settings)
    worker = spawn("worker", settings, "--concurrency", "8")

    # Releasing: two active contacts, deleted while the providers are slow.
    releasing = [submit(service, tenant, PHONE, next(assistants)) for _ in range(2)]

    def status(ids: list[str]) -> dict[str, str]:
        with db.read() as session:
            return dict(session.execute(
                select(Contact.id, Contact.status).where(Contact.id.in_(ids))).all())

    wait_for(lambda: set(status(releasing).values()) == {"active"}, timeout=60)
    sandbox.set_faults(latency_ms=3000)  # every provider answer takes 3 s
    lifecycle = LifecycleService(db, service.settings, service.publisher)
    for cid in releasing:
        assert lifecycle.delete(tenant.account_id, tenant.assistant_ids[
            releasing.index(cid)], cid).status == 202
    # In their first provider request: searches and purchases, a user insert, a sender.
    first = [submit(service, tenant, PHONE, next(assistants)) for _ in range(4)]
    first.append(submit(service, tenant, WHATSAPP, next(assistants)))
    first.append(submit(service, tenant, email(0), next(assistants)))

    def leased(ids: list[str]) -> int:
        with db.read() as session:
            return len(session.execute(select(Contact.id).where(
                Contact.id.in_(ids), Contact.lease_owner.is_not(None))).all())

    # Every running contact is leased (the lease comes before any provider request), and the
    # worker's eight threads are full: what is posted now stays queued.
    wait_for(lambda: leased(first + releasing) == len(first + releasing), timeout=30,
             every=0.05)
    queued = [submit(service, tenant, PHONE, next(assistants)) for _ in range(4)]
    time.sleep(1.0)  # inside their requests (3 s each)
    worker.kill()
    killed = datetime.now(UTC)
    sandbox.set_faults(latency_ms=300)
    spawn("worker", settings, "--concurrency", "8")
    groups = {"first request": first, "queued": queued, "releasing": releasing}
    everyone = [c for ids in groups.values() for c in ids]
    wait_for(lambda: all(s in TERMINAL for s in status(everyone).values()), timeout=90,
             every=0.2)

    times = {}
    with db.read() as session:
        for name, ids in groups.items():
            last = max(session.execute(
                select(Contact.updated_at).where(Contact.id.in_(ids))).scalars())
            if last.tzinfo is None:
                last = last.replace(tzinfo=UTC)
            times[name] = (last - killed).total_seconds()
    print("\nkill to last terminal contact: " + ", ".join(
        f"{name} {seconds:.1f} s ({len(groups[name])})" for name, seconds in times.items()))
    assert all(seconds < PROMISE_S for seconds in times.values()), times
    assert set(status(first + queued).values()) == {"active"}
    assert set(status(releasing).values()) == {"deleted"}
    assert check_invariants(db, sandbox) == {"active": 10, "deleted": 2}
    assert beat.proc.poll() is None
