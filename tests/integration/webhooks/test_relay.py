"""The relay's queries on a real database, with a clock the test moves: long waits stay in
the database until due; lost tasks are found again; nothing is published twice at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support.webhooks import add_event, deliveries, set_endpoint_unchecked

from worker.runtime.delivery import COUNTDOWN_MAX_S, Deliverer, WebhookSender


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_a_wait_longer_than_a_countdown_is_published_by_the_relay_when_due(
    make_settings, db, tenant, sandbox
):
    settings = make_settings(webhook_retry_schedule=(3600,), webhook_relay_grace_s=30)
    clock = Clock()
    sender = WebhookSender(settings)
    deliverer = Deliverer(db, settings, sender, clock)
    sandbox.set_sink_status("later", 503)
    set_endpoint_unchecked(db, tenant.account_id, sandbox.sink_url("later"))
    event_id = add_event(db, tenant.account_id)

    assert COUNTDOWN_MAX_S < 3600
    assert deliverer.deliver(event_id, "w1") is None  # no broker countdown for an hour's wait
    [delivery] = deliveries(db)
    assert delivery.status == "pending"
    assert delivery.next_attempt_at == clock.now + timedelta(seconds=3600)
    assert deliverer.relay() == []  # not due yet

    clock.advance(3601)
    assert deliverer.relay() == [event_id]
    assert deliverer.relay() == []  # published: not again within the grace
    sandbox.set_sink_status("later", 200)
    assert deliverer.deliver(event_id, "w2") is None
    assert deliveries(db)[0].status == "succeeded"
    assert len(sandbox.sink("later")) == 2
    sender.close()


def test_the_relay_makes_deliveries_for_events_nobody_published(make_settings, db, tenant):
    settings = make_settings(webhook_relay_grace_s=30)
    clock = Clock()
    deliverer = Deliverer(db, settings, WebhookSender(settings), clock)
    set_endpoint_unchecked(db, tenant.account_id, "http://127.0.0.1:9/")
    event_id = add_event(db, tenant.account_id)
    assert deliverer.relay() == []  # the worker's own publish may still come
    clock.advance(31)
    assert deliverer.relay() == [event_id]
    [delivery] = deliveries(db)
    assert delivery.status == "pending" and delivery.event_id == event_id


def test_a_short_retry_is_left_to_its_countdown_and_taken_back_after_the_grace(
    make_settings, db, tenant
):
    settings = make_settings(webhook_retry_schedule=(5,), webhook_relay_grace_s=30,
                             webhook_timeout_s=1)
    clock = Clock()
    deliverer = Deliverer(db, settings, WebhookSender(settings), clock)
    set_endpoint_unchecked(db, tenant.account_id, "http://127.0.0.1:9/")  # nothing listens
    event_id = add_event(db, tenant.account_id)
    assert deliverer.deliver(event_id, "w1") == 5  # a countdown on the broker
    clock.advance(6)
    assert deliverer.relay() == []  # its countdown message is expected
    clock.advance(30)
    assert deliverer.relay() == [event_id]  # it was lost: published again
    assert deliverer.deliver(event_id, "w2") is None  # the last attempt
    assert deliveries(db)[0].status == "failed"
