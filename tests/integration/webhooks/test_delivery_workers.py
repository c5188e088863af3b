"""Webhooks end to end: real worker and beat processes, Redis, the database, and the
sandbox's sink over HTTP as the receiver."""

from __future__ import annotations

import json
import subprocess
import sys

import redis
from standardwebhooks import Webhook
from support.pipeline import all_terminal, submit, wait_for
from support.services import settings_env
from support.webhooks import PHONE, deliveries


def _ids(received) -> set[str]:
    return {r["headers"]["webhook-id"] for r in received}


def test_activation_arrives_signed_and_verified_by_the_reference_verifier(
    spawn, wsettings, service, webhooks, tenant, sandbox, db
):
    secret = webhooks.set(tenant.account_id, {"url": sandbox.sink_url("acme")})["secret"]
    contact_id = submit(service, tenant, PHONE)
    spawn("worker", wsettings, "--concurrency", "4")
    received = wait_for(lambda: sandbox.sink("acme"), timeout=60)

    delivery = received[0]
    event = Webhook(secret).verify(delivery["body"], delivery["headers"])
    assert event["type"] == "contact.active"
    assert event["data"]["id"] == contact_id and event["data"]["status"] == "active"
    assert event["data"]["address"].startswith("+1")
    assert set(event) == {"type", "timestamp", "data"}
    assert delivery["headers"]["webhook-id"].startswith("evt_")
    assert delivery["headers"]["content-type"] == "application/json"

    [listed] = wait_for(lambda: [d for d in webhooks.deliveries(tenant.account_id, contact_id)
                                 if d["status"] == "succeeded"], timeout=10)
    assert listed["event_id"] == delivery["headers"]["webhook-id"]
    assert [(a["outcome"], a["status_code"]) for a in listed["attempts"]] == [("succeeded", 200)]
    assert listed["attempts"][0]["response"] == '{"received":true}'


def test_receiver_down_for_several_attempts_then_up_gets_the_event_with_the_same_id(
    spawn, wsettings, service, webhooks, tenant, sandbox, db
):
    webhooks.set(tenant.account_id, {"url": sandbox.sink_url("down")})
    sandbox.set_sink_status("down", 503)
    submit(service, tenant, PHONE)
    spawn("worker", wsettings, "--concurrency", "4")
    wait_for(lambda: len(sandbox.sink("down")) >= 3, timeout=60)
    sandbox.set_sink_status("down", 200)
    wait_for(lambda: [d for d in deliveries(db) if d.status == "succeeded"], timeout=30)

    received = sandbox.sink("down")
    assert len(_ids(received)) == 1  # one event, one webhook-id on every attempt
    [listed] = webhooks.deliveries(tenant.account_id, None)
    codes = [a["status_code"] for a in listed["attempts"]]
    assert codes[-1] == 200 and set(codes[:-1]) == {503} and len(codes) == len(received) >= 4
    assert {a["outcome"] for a in listed["attempts"][:-1]} == {"http_error"}
    assert all(a["latency_ms"] >= 0 for a in listed["attempts"])


def test_after_the_last_attempt_the_delivery_fails_and_redrive_sends_it_again(
    spawn, wsettings, service, webhooks, tenant, sandbox, db
):
    settings = wsettings.model_copy(update={"webhook_retry_schedule": (1, 1)})
    webhooks.set(tenant.account_id, {"url": sandbox.sink_url("dead")})
    sandbox.set_sink_status("dead", 500)
    submit(service, tenant, PHONE)
    spawn("worker", settings, "--concurrency", "4")
    [failed] = wait_for(lambda: [d for d in deliveries(db) if d.status == "failed"], timeout=60)
    assert failed.attempts == 3 and failed.next_attempt_at is None
    assert len(sandbox.sink("dead")) == 3

    sandbox.set_sink_status("dead", 200)
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "webhooks", "redrive", "--failed", "--json"],
        env=settings_env(settings), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["event_ids"] == [failed.event_id]
    wait_for(lambda: deliveries(db)[0].status == "succeeded", timeout=30)
    assert _ids(sandbox.sink("dead")) == {failed.event_id}
    assert len(sandbox.sink("dead")) == 4


def test_an_account_never_receives_another_accounts_events(
    spawn, wsettings, service, webhooks, make_tenant, sandbox, db
):
    first, second, silent = (make_tenant(name=n) for n in ("first", "second", "silent"))
    webhooks.set(first.account_id, {"url": sandbox.sink_url("first")})
    webhooks.set(second.account_id, {"url": sandbox.sink_url("second")})
    mine = {t.account_id: submit(service, t, PHONE) for t in (first, second, silent)}
    spawn("worker", wsettings, "--concurrency", "4")
    wait_for(lambda: all_terminal(db, 3), timeout=60)
    wait_for(lambda: sandbox.sink("first") and sandbox.sink("second"), timeout=30)
    wait_for(lambda: len(deliveries(db)) == 3 and all(d.status != "pending"
                                                      for d in deliveries(db)), timeout=30)

    for tenant, sink in ((first, "first"), (second, "second")):
        bodies = [json.loads(r["body"]) for r in sandbox.sink(sink)]
        assert [b["data"]["id"] for b in bodies] == [mine[tenant.account_id]]
        listed = webhooks.deliveries(tenant.account_id, None)
        assert [d["contact_id"] for d in listed] == [mine[tenant.account_id]]
        # Another account's contact id filters to nothing, not to its deliveries.
        assert webhooks.deliveries(tenant.account_id, mine[silent.account_id]) == []
    # No endpoint: the event is kept and listed, not sent.
    [kept] = webhooks.deliveries(silent.account_id, None)
    assert kept["status"] == "no_endpoint" and kept["attempts"] == []
    assert kept["contact_id"] == mine[silent.account_id]


def test_a_delivery_task_killed_mid_send_is_sent_again_not_lost(
    spawn, wsettings, service, webhooks, tenant, sandbox, db
):
    webhooks.set(tenant.account_id, {"url": sandbox.sink_url("slow")})
    sandbox.set_sink_status("slow", 200, delay_ms=1500)  # holds each request 1.5 s
    submit(service, tenant, PHONE)
    worker = spawn("worker", wsettings, "--concurrency", "4")
    wait_for(lambda: sandbox.sink("slow"), timeout=60, every=0.02)
    worker.kill()  # while the sink still holds the request
    [held] = deliveries(db)
    assert held.status == "pending" and held.lease_owner is not None

    spawn("worker", wsettings, "--concurrency", "4")
    spawn("beat", wsettings)
    wait_for(lambda: deliveries(db)[0].status == "succeeded", timeout=60)
    received = sandbox.sink("slow")
    assert len(received) == 2 and _ids(received) == {held.event_id}
    [listed] = webhooks.deliveries(tenant.account_id, None)
    assert [a["outcome"] for a in listed["attempts"]] == ["succeeded"]  # the lost one left none


def test_an_event_whose_delivery_task_was_lost_is_relayed_by_beat(
    spawn, wsettings, service, webhooks, tenant, sandbox, db, redis_url
):
    webhooks.set(tenant.account_id, {"url": sandbox.sink_url("relay")})
    submit(service, tenant, PHONE)
    # A worker that provisions but does not deliver: the delivery task waits in Redis...
    spawn("worker", wsettings, "--concurrency", "2", "--queues", "interactive,bulk")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    redis.Redis.from_url(redis_url).flushdb()  # ...and is lost with the broker's data
    spawn("worker", wsettings, "--concurrency", "2")
    spawn("beat", wsettings)
    received = wait_for(lambda: sandbox.sink("relay"), timeout=60)
    assert len(received) == 1
    wait_for(lambda: deliveries(db) and deliveries(db)[0].status == "succeeded", timeout=30)
