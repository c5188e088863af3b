"""Chaos for a contact's later life: deletes and cancellations racing provisioning, worker
kills and provider faults while contacts are released, two billing passes at once, then every
invariant and the ledger against the model. Its WhatsApp contacts are on the shared pool of
senders.

CI runs a bounded form (`PROVISIONER_TEST_CHAOS_CONTACTS`, default 150, of which a third
here); `make chaos` runs more.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import FAST, statuses, wait_for
from support.services import serve_in_thread

from api_stub.app import create_app
from worker.app.lifecycle import LifecycleService
from worker.domain.billing import month_of, next_month
from worker.store.models import Contact

pytestmark = pytest.mark.chaos

CONTACTS = max(30, int(os.environ.get("PROVISIONER_TEST_CHAOS_CONTACTS", "150")) // 3)
FEES = {"monthly_cost_phone": "1.50", "monthly_cost_email": "3.00", "monthly_cost_whatsapp": "5.00"}
FAULTS = {
    "error_rate": 0.15,
    "timeout_rate": 0.02,
    "drop_after_commit_rate": 0.1,
    "latency_ms": 20,
    "sender_online_after_s": 0.5,
}
NO_FAULTS = {"error_rate": 0.0, "timeout_rate": 0.0, "drop_after_commit_rate": 0.0, "latency_ms": 0}
FINAL = ("active", "grace_period", "failed", "deleted")


class NoPublisher:
    def provision(self, contact_id: str, *, queue: str) -> None:
        """Beat's reconciler brings the unpaid contacts to a worker."""


def items(assistant_ids: list[int]) -> list[dict]:
    kinds = ("phone", "email", "whatsapp")
    found = []
    for n, assistant in enumerate(assistant_ids):
        item: dict = {"assistant_id": assistant, "contact_type": kinds[n % 3]}
        if item["contact_type"] == "email":
            item.update(email_local=f"life.{assistant}", first_name="Ada", last_name="L")
        elif item["contact_type"] == "whatsapp":
            # On the shared pool (the account has no WABA of its own): three users, each with
            # several assistants, so the pool grows a sender per assistant of a user while
            # cancellations, deletions and kills race its growth.
            item["user_whatsapp_number"] = f"+1415555{3100 + (n // 3) % 3}"
        found.append(item)
    return found


def test_lifecycle_invariants_hold_under_chaos(
    make_settings, chaos_redis, spawn, db, make_tenant, sandbox
):
    settings = make_settings(
        sandbox_url=sandbox.url,
        redis_url=chaos_redis.url,
        **{**FAST, "lease_s": 3, "max_deliveries": 10},
        **FEES,
    )
    rich = make_tenant(credits_cents=CONTACTS * 2_000, assistants=CONTACTS)
    # Enough for the setups and their first month only: the next month's pass puts its
    # contacts into grace, and a pass after the grace deletes them as unpaid.
    poor = make_tenant(credits_cents=3 * (100 + 150), assistants=3, name="poor")

    spawn("beat", settings)
    worker = spawn("worker", settings, "--concurrency", "16")
    with serve_in_thread(create_app(settings, db=db)) as api, httpx.Client(
        base_url=api, timeout=60
    ) as http:
        sandbox.set_faults(**FAULTS)
        accepted: list[tuple[object, int, str]] = []
        for tenant, body in ((rich, items(rich.assistant_ids)),
                             (poor, [{"assistant_id": a, "contact_type": "phone"}
                                     for a in poor.assistant_ids])):
            answer = http.post("/v0/contact/batch", headers=tenant.headers, json={"items": body})
            assert answer.status_code == 202, answer.text
            for a in answer.json()["info"]["accepted"]:
                accepted.append((tenant, body[a["index"]]["assistant_id"], a["contact_id"]))

        def delete(tenant, assistant: int, contact_id: str) -> int:
            url = f"/v0/assistant/{assistant}/contact/{contact_id}"
            return http.delete(url, headers=tenant.headers).status_code

        # A quarter cancelled at once, racing their provisioning.
        cancelled = [c for i, c in enumerate(accepted) if c[0] is rich and i % 4 == 0]
        for tenant, assistant, contact_id in cancelled:
            assert delete(tenant, assistant, contact_id) == 202
        # A quarter deleted once active, while the worker is killed twice mid-release.
        wanted = {c[2] for i, c in enumerate(accepted) if c[0] is rich and i % 4 == 1}
        deleted: set[str] = set()
        kills = 0
        deadline = time.monotonic() + 300
        while deleted != wanted and time.monotonic() < deadline:
            now = statuses(db)
            for tenant, assistant, contact_id in accepted:
                if contact_id in wanted - deleted and now[contact_id] in ("active", "failed"):
                    assert delete(tenant, assistant, contact_id) in (200, 202)
                    deleted.add(contact_id)
            if kills < 2 and len(deleted) >= len(wanted) * (kills + 1) // 3:
                worker.kill()
                worker = spawn("worker", settings, "--concurrency", "16")
                kills += 1
            time.sleep(0.1)
        assert deleted == wanted

        def settled() -> bool:
            return all(s in FINAL for s in statuses(db).values())

        def wait_settled() -> None:
            try:
                wait_for(settled, timeout=240, every=0.2)
            except AssertionError:
                with db.read() as session:
                    stuck = session.execute(
                        select(Contact.id, Contact.status, Contact.lease_owner,
                               Contact.lease_expires_at, Contact.error_code)
                        .where(Contact.status.not_in(FINAL))
                    ).all()
                raise AssertionError(f"not settled: {stuck[:10]}") from None

        wait_settled()

        # Two billing passes at once, as of next month, while the faults go on.
        service = LifecycleService(db, settings, NoPublisher())
        later = datetime.fromisoformat(f"{next_month(month_of(datetime.now(UTC)))}-02T00:00:00+00:00")
        results = []
        passes = [threading.Thread(target=lambda: results.append(service.billing_pass(now=later)))
                  for _ in range(2)]
        for thread in passes:
            thread.start()
        for thread in passes:
            thread.join()
        assert sum(r.grace_period for r in results) == 3  # the poor account's phones
        # The grace ends unpaid: those contacts are released by the workers.
        after_grace = later.replace(day=20)
        assert service.billing_pass(now=after_grace).deleted == 3
        sandbox.set_faults(**NO_FAULTS)
        wait_settled()

    by_status = check_invariants(db, sandbox)
    with db.read() as session:
        reasons = Counter(session.execute(
            select(Contact.deleted_reason).where(Contact.status == "deleted")).scalars())
        cancelled_ids = {c[2] for c in cancelled}
        cancelled_statuses = Counter(session.execute(
            select(Contact.status).where(Contact.id.in_(cancelled_ids))).scalars())
    assert reasons["unpaid"] == 3, reasons
    assert set(cancelled_statuses) == {"deleted"}
    assert reasons["requested"] + reasons["cancelled"] >= len(wanted)
    print(
        f"\nlifecycle chaos: {len(accepted)} contacts, {dict(by_status)}, deleted by reason "
        f"{dict(reasons)}, worker kills {kills}, passes {[r.as_dict() for r in results]}"
    )
