"""Shared provider budgets in the pipeline: a provider's 429 pauses every worker, a throttled
step is rescheduled without counting as an attempt, and a batch run by a real worker stays
under the provider's rate while interactive work still gets through."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from support.pipeline import all_terminal, drive, statuses, submit, wait_for
from test_steps_in_process import PHONE, contact

from worker.app.batches import BatchService
from worker.providers import Providers
from worker.runtime.pipeline import Pipeline
from worker.store.models import Contact


def test_a_429_pauses_every_worker_and_a_throttled_step_is_not_an_attempt(
    service, pipeline, psettings, make_tenant, sandbox, db
):
    tenant = make_tenant(assistants=2)
    first, second = (submit(service, tenant, PHONE, a) for a in tenant.assistant_ids)
    sandbox.set_faults(rate_limit_per_s=1)  # one token: the search passes, the purchase is 429
    assert pipeline.run(first, "worker-1").state == "retry"
    sent = sandbox.stats()["requests"]
    assert sandbox.stats()["by_status"]["429"] == 1

    providers = Providers.from_settings(psettings)
    other_worker = Pipeline(db, providers, psettings)
    try:
        before = datetime.now(UTC)
        outcome = other_worker.run(second, "worker-2")
        assert outcome.state == "wait" and 0 < outcome.again_in_s <= 1 + 1
        assert sandbox.stats()["requests"] == sent  # held back: nothing was sent
        row, steps = contact(db, second)
        assert row.lease_owner is None
        # Its candidate came from the number pool the first contact's search filled (no
        # request); the purchase was held back, and is no attempt.
        assert (steps["find_number"].status, steps["find_number"].attempts) == ("done", 1)
        assert (steps["buy_number"].status, steps["buy_number"].attempts) == ("pending", 0)
        # Time held back does not count against the retry bound (PROVISIONER_STEP_MAX_TOTAL_S).
        assert row.started_at >= before + timedelta(seconds=outcome.again_in_s)

        sandbox.set_faults(rate_limit_per_s=0)
        time.sleep(outcome.again_in_s)
        assert drive(other_worker, second) == "active"
        assert drive(pipeline, first) == "active"
    finally:
        providers.close()
    _, steps = contact(db, second)
    # The throttled run was no attempt: the first real one skipped the look-up by tag.
    assert [(s.status, s.attempts) for s in steps.values()] == [("done", 1), ("done", 1)]


def test_a_batch_stays_under_the_provider_rate_and_interactive_work_gets_through(
    spawn, psettings, service, make_tenant, sandbox, db
):
    # 50 purchases and the number pool's few searches (about 52 Twilio requests; 100 without
    # the pool); bulk may use 0.8 of 15/second, 12/second.
    count = 50
    sandbox.set_faults(rate_limit_per_s=20, latency_ms=10)
    settings = psettings.model_copy(update={"provider_rate_limits": "twilio=15/second"})
    tenant = make_tenant(credits_cents=100_000, assistants=count + 1)
    items = [{"assistant_id": a, **PHONE} for a in tenant.assistant_ids[:count]]
    started = time.monotonic()
    reply = BatchService(service).submit(
        tenant.account_id, json.dumps({"items": items}).encode(), path="/v0/contact/batch")
    assert len(reply.body["info"]["accepted"]) == count
    spawn("worker", settings, "--concurrency", "8")

    wait_for(lambda: sum(s == "active" for s in statuses(db).values()) >= count // 4, timeout=60)
    urgent = submit(service, tenant, PHONE, tenant.assistant_ids[count])
    wait_for(lambda: statuses(db)[urgent] in ("active", "failed"), timeout=60)
    still_open = sum(s in ("pending", "provisioning") for s in statuses(db).values())

    wait_for(lambda: all_terminal(db, count + 1), timeout=120)
    elapsed = time.monotonic() - started
    assert set(statuses(db).values()) == {"active"}
    stats = sandbox.stats()
    too_many = stats["by_status"].get("429", 0)
    assert too_many <= 1, stats  # none expected (4 or more without the budget)
    # Throttled steps sent nothing and stayed first attempts: no look-ups were added.
    assert stats["requests"] <= 2 * (count + 1) + 2 * too_many, stats
    # The budget, not the worker, set the pace (unbudgeted, the worker ends in about 1 s).
    assert elapsed >= stats["requests"] / 12 - 2, (elapsed, stats)
    # The interactive contact did not queue behind the batch's throttled contacts, which the
    # worker holds meanwhile as countdown (ETA) messages outside its pool.
    assert still_open >= count // 4, still_open
    with db.read() as session:
        bulk = session.execute(select(Contact.batch_id).where(Contact.id == urgent)).scalar()
    assert bulk is None
