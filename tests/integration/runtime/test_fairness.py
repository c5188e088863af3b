"""Fairness on a real worker: while a large batch is being worked, an interactive contact is
not queued behind it; it goes active within a few job-times."""

from __future__ import annotations

import json
import statistics
import time

from sqlalchemy import select
from support.pipeline import all_terminal, statuses, submit, wait_for
from test_steps_in_process import PHONE

from worker.app.batches import BatchService
from worker.store.models import Contact

BATCH = 200  # about 20 s of work at concurrency 4 and 150 ms per provider call
CONCURRENCY = 4
LATENCY_S = 0.150  # per provider call


def submit_batch(service, tenant, assistant_ids) -> None:
    """One `POST /v0/contact/batch` of phone contacts, as the API runs it: all accepted."""
    items = [{"assistant_id": a, **PHONE} for a in assistant_ids]
    reply = BatchService(service).submit(
        tenant.account_id, json.dumps({"items": items}).encode(), path="/v0/contact/batch")
    assert len(reply.body["info"]["accepted"]) == len(items)


def active_of(db, account_id: int) -> int:
    with db.read() as session:
        rows = session.execute(
            select(Contact.status).where(Contact.account_id == account_id)).scalars().all()
    return sum(s == "active" for s in rows)


def test_interactive_contact_overtakes_a_running_batch(
    spawn, psettings, service, make_tenant, sandbox, db
):
    sandbox.set_faults(latency_ms=round(LATENCY_S * 1000))
    tenant = make_tenant(credits_cents=100_000, assistants=BATCH + 1)
    items = [{"assistant_id": a, **PHONE} for a in tenant.assistant_ids[:BATCH]]
    reply = BatchService(service).submit(
        tenant.account_id, json.dumps({"items": items}).encode(), path="/v0/contact/batch")
    assert len(reply.body["info"]["accepted"]) == BATCH
    spawn("worker", psettings, "--concurrency", str(CONCURRENCY))

    def active():
        return sum(s == "active" for s in statuses(db).values())

    wait_for(lambda: active() >= BATCH // 5, timeout=90, every=0.2)
    posted = time.monotonic()
    urgent = submit(service, tenant, PHONE, tenant.assistant_ids[BATCH])
    wait_for(lambda: statuses(db).get(urgent) == "active", timeout=60, every=0.05)
    waited = time.monotonic() - posted
    backlog = sum(s == "pending" for s in statuses(db).values())

    with db.read() as session:
        done = session.execute(
            select(Contact.started_at, Contact.updated_at)
            .where(Contact.batch_id.is_not(None), Contact.status == "active")).all()
    # A phone job is two provider calls; `started_at` is stamped when the lease is taken,
    # after the number search (run ahead of the lease), so add that call's latency back.
    job_s = statistics.median((end - start).total_seconds() for start, end in done) + LATENCY_S
    # In line behind the batch it would wait for the backlog: backlog / CONCURRENCY job-times.
    assert backlog / CONCURRENCY >= 10, backlog
    assert waited <= 4 * job_s, (waited, job_s, backlog)
    wait_for(lambda: all_terminal(db, BATCH + 1), timeout=120, every=0.5)


def test_a_small_batch_is_not_queued_behind_a_large_one(
    spawn, psettings, service, make_tenant, sandbox, db
):
    """Two accounts' batches on one worker: a batch of 20 posted while one of 200 is being
    worked finishes long before it, because a batch's later contacts wait at lower broker
    priorities than another batch's first ones (queue_priority). In one FIFO queue the small
    batch would finish with the large one's last contacts."""
    large, small = 200, 20
    sandbox.set_faults(latency_ms=round(LATENCY_S * 1000))
    big = make_tenant(credits_cents=1_000_000, assistants=large, name="big")
    little = make_tenant(credits_cents=100_000, assistants=small, name="little")
    submit_batch(service, big, big.assistant_ids)
    spawn("worker", psettings, "--concurrency", str(CONCURRENCY))
    wait_for(lambda: active_of(db, big.account_id) >= 40, timeout=90, every=0.2)
    submit_batch(service, little, little.assistant_ids)
    wait_for(lambda: active_of(db, little.account_id) == small, timeout=120, every=0.1)
    big_done = active_of(db, big.account_id)
    # The large batch had 160 or fewer left when the small one came; the small one is done
    # while most of them still wait (in FIFO order it would finish after all of them).
    assert big_done <= large // 2, big_done
    wait_for(lambda: all_terminal(db, large + small), timeout=180, every=0.5)


def test_a_small_batch_is_not_queued_behind_a_large_accounts_later_batches(
    spawn, psettings, service, make_tenant, sandbox, db
):
    """A large onboarding comes as several batches (the CLI sends `batch_max_items` at a
    time). Each later batch continues its account's line: a small batch of another account,
    posted while the first is being worked, goes ahead of the second batch's contacts. Were
    each batch's first contacts at the front, the small one would wait behind all 64 of them."""
    first, second, small = 64, 64, 16
    sandbox.set_faults(latency_ms=round(LATENCY_S * 1000))
    big = make_tenant(credits_cents=1_000_000, assistants=first + second, name="big")
    little = make_tenant(credits_cents=100_000, assistants=small, name="little")
    submit_batch(service, big, big.assistant_ids[:first])
    submit_batch(service, big, big.assistant_ids[first:])
    spawn("worker", psettings, "--concurrency", str(CONCURRENCY))
    wait_for(lambda: active_of(db, big.account_id) >= 16, timeout=90, every=0.2)
    submit_batch(service, little, little.assistant_ids)
    wait_for(lambda: active_of(db, little.account_id) == small, timeout=120, every=0.1)
    big_done = active_of(db, big.account_id)
    # The small batch waited for the rest of the first batch (queued before it, at the
    # front), not for the second: at most the first's 64 and the few in hand when it came.
    assert big_done <= first + 2 * CONCURRENCY, big_done
    wait_for(lambda: all_terminal(db, first + second + small), timeout=180, every=0.5)
