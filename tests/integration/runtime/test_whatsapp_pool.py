"""The shared pool of WhatsApp senders, against the sandbox over HTTP: a contact without room
on a WABA of its account's own is routed by its user's WhatsApp number to an assistant on a
pool sender that user has no other assistant on; the pool grows by one sender at a time, as
the contacts that need one ask, up to its bound; releasing a pool contact removes its route,
never the shared sender or its number."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import FAST, all_terminal, dedicated, drive, submit, wait_for

from worker.app.contacts import ContactService
from worker.app.lifecycle import LifecycleService
from worker.domain.errors import InvalidRequest
from worker.providers import Providers
from worker.runtime.celery_app import create_celery
from worker.runtime.pipeline import Pipeline
from worker.runtime.tasks import CeleryPublisher
from worker.store import credits
from worker.store.models import Contact, PoolRoute, PoolSender

ADA = "+14155552671"
GRACE = "+14155552672"


def body(user: str = ADA, **extra: str) -> dict[str, str]:
    return {"contact_type": "whatsapp", "user_whatsapp_number": user, **extra}


@pytest.fixture
def pool_settings(make_settings, sandbox):
    def make(**overrides):
        return make_settings(sandbox_url=sandbox.url, **{**FAST, **overrides})

    return make


@pytest.fixture
def stack(pool_settings, db) -> Iterator:
    """A service and an in-process pipeline with the same settings."""
    made = []

    def make(**overrides):
        settings = pool_settings(**overrides)
        service = ContactService(db, settings, CeleryPublisher(create_celery(settings)))
        providers = Providers.from_settings(settings)
        made.append(providers)
        return service, Pipeline(db, providers, settings)

    yield make
    for providers in made:
        providers.close()


def routes(db) -> dict[str, PoolRoute]:
    with db.read() as session:
        return {r.contact_id: r for r in session.execute(select(PoolRoute)).scalars()}


def senders(db) -> list[PoolSender]:
    with db.read() as session:
        return list(session.execute(select(PoolSender).order_by(PoolSender.id)).scalars())


def row(db, contact_id: str) -> Contact:
    with db.read() as session:
        contact = session.get(Contact, contact_id)
        assert contact is not None
        return contact


def pool_numbers(sandbox) -> list[dict]:
    return [n for n in sandbox.resources()["phone_numbers"] if n["tag"].startswith("pool:")]


def test_two_assistants_of_one_user_get_different_pool_senders(stack, make_tenant, sandbox, db):
    sandbox.set_faults(sender_online_after_s=0.2)
    service, pipeline = stack()
    tenant = make_tenant(assistants=2)
    first = submit(service, tenant, body(), tenant.assistant_ids[0])
    second = submit(service, tenant, body(), tenant.assistant_ids[1])
    assert drive(pipeline, first) == "active"
    assert drive(pipeline, second) == "active"
    taken = routes(db)
    assert taken[first].pool_sender_id != taken[second].pool_sender_id
    assert taken[first].user_whatsapp_number == taken[second].user_whatsapp_number == ADA
    assert row(db, first).address != row(db, second).address
    assert [s.status for s in senders(db)] == ["online", "online"]
    assert len(pool_numbers(sandbox)) == 2
    assert check_invariants(db, sandbox) == {"active": 2}


def test_different_users_share_one_pool_sender(stack, make_tenant, sandbox, db):
    sandbox.set_faults(sender_online_after_s=0.2)
    service, pipeline = stack()
    acme, other = make_tenant(), make_tenant(name="other")
    a = submit(service, acme, body(ADA))
    b = submit(service, other, body(GRACE))
    assert drive(pipeline, a) == "active"
    assert drive(pipeline, b) == "active"
    assert routes(db)[a].pool_sender_id == routes(db)[b].pool_sender_id
    [number] = pool_numbers(sandbox)
    assert row(db, a).address == row(db, b).address == number["address"]
    [sender] = [s for s in sandbox.resources()["senders"] if s["tag"] == number["tag"]]
    assert sender["waba_id"] == service.settings.twilio_waba_id  # the platform's WABA
    # Charged as any WhatsApp contact.
    assert row(db, b).setup_cost_cents == 200 and row(db, b).charged
    assert check_invariants(db, sandbox) == {"active": 2}


def test_the_route_is_shown_in_the_contacts_info(stack, make_tenant, sandbox, db):
    sandbox.set_faults(sender_online_after_s=0.1)
    service, pipeline = stack()
    tenant = make_tenant()
    cid = submit(service, tenant, body())
    assert drive(pipeline, cid) == "active"
    info = service.get(tenant.account_id, tenant.assistant_ids[0], cid)
    # Within the contract's fields: a shared sender, its number, the user routed to it.
    assert info["request"]["whatsapp_sender"] == "shared"
    assert info["request"]["user_whatsapp_number"] == ADA == routes(db)[cid].user_whatsapp_number
    assert info["address"] == senders(db)[0].phone_number
    assert [s["name"] for s in info["steps"]] == ["assign_pool_sender"]


def test_growth_under_concurrency_makes_exactly_one_sender(
    pool_settings, make_tenant, spawn, sandbox, db
):
    """Eight users at once need a sender from an empty pool: one of them grows it, the others
    join that growing sender and wait for it; nothing is bought twice. Their numbers are never
    written to the worker's log in clear."""
    sandbox.set_faults(sender_online_after_s=1.0, latency_ms=50)
    settings = pool_settings()
    service = ContactService(db, settings, CeleryPublisher(create_celery(settings)))
    users = [f"+1415555{2700 + i}" for i in range(8)]
    tenants = [make_tenant(name=f"t{i}") for i in range(len(users))]
    ids = [submit(service, t, body(u)) for t, u in zip(tenants, users, strict=True)]
    worker = spawn("worker", settings, "--concurrency", "8")
    wait_for(lambda: all_terminal(db, len(ids)), timeout=90)
    assert [s.status for s in senders(db)] == ["online"]
    assert len(pool_numbers(sandbox)) == 1
    assert len([s for s in sandbox.resources()["senders"] if s["tag"] == "pool:1"]) == 1
    assert {r.pool_sender_id for r in routes(db).values()} == {senders(db)[0].id}
    assert check_invariants(db, sandbox) == {"active": len(ids)}
    worker.stop()
    text = worker.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "contact_active" for e in lines)
    for number in [*users, senders(db)[0].phone_number]:
        assert number not in text, "a phone number in clear in the worker's log"


def test_a_full_pool_fails_the_contact_cleanly_with_its_credits_released(
    stack, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.1)
    service, pipeline = stack(whatsapp_pool_max_senders=1)
    tenant = make_tenant(assistants=2)
    first = submit(service, tenant, body(), tenant.assistant_ids[0])
    assert drive(pipeline, first) == "active"
    second = submit(service, tenant, body(), tenant.assistant_ids[1])
    assert drive(pipeline, second) == "failed"
    failed = row(db, second)
    assert failed.error_code == "whatsapp_pool_exhausted"
    assert not failed.charged and second not in routes(db)
    with db.read() as session:
        balance = credits.balance(session, tenant.account_id)
    assert (balance.balance_cents, balance.reserved_cents) == (10_000 - 200, 0)
    assert len(pool_numbers(sandbox)) == 1
    assert check_invariants(db, sandbox) == {"active": 1, "failed": 1}


def test_deleting_a_pool_contact_frees_its_route_and_leaves_the_sender(
    stack, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.1)
    service, pipeline = stack(whatsapp_pool_max_senders=1)
    tenant = make_tenant(assistants=2)
    first = submit(service, tenant, body(), tenant.assistant_ids[0])
    neighbour = submit(service, make_tenant(name="other"), body(GRACE))
    assert drive(pipeline, first) == "active"
    assert drive(pipeline, neighbour) == "active"
    lifecycle = LifecycleService(db, service.settings, service.publisher)
    assert lifecycle.delete(tenant.account_id, tenant.assistant_ids[0], first).status == 202
    assert drive(pipeline, first) == "deleted"
    assert first not in routes(db) and neighbour in routes(db)
    assert [s.status for s in senders(db)] == ["online"]
    assert len(pool_numbers(sandbox)) == 1  # the shared number and sender stay
    assert check_invariants(db, sandbox) == {"active": 1, "deleted": 1}
    # The route is free: the same user's other assistant fits on the one sender of a full pool.
    again = submit(service, tenant, body(), tenant.assistant_ids[1])
    assert drive(pipeline, again) == "active"
    assert routes(db)[again].pool_sender_id == senders(db)[0].id


def test_a_sender_that_never_comes_online_fails_its_contacts_and_leaves_nothing(
    stack, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=600)
    service, pipeline = stack(whatsapp_pool_wait_s=1)
    grower = submit(service, make_tenant(), body(ADA))
    waiter = submit(service, make_tenant(name="other"), body(GRACE))
    assert pipeline.run(grower, "runner").state == "wait"  # grows the pool's first sender
    assert pipeline.run(waiter, "runner").state == "wait"  # joins it and waits
    assert routes(db)[waiter].pool_sender_id == routes(db)[grower].pool_sender_id
    assert drive(pipeline, grower) == "failed"
    assert drive(pipeline, waiter) == "failed"
    assert row(db, grower).error_code == row(db, waiter).error_code == "whatsapp_pool_timeout"
    assert [s.status for s in senders(db)] == ["failed"]
    assert pool_numbers(sandbox) == [] and routes(db) == {}
    assert check_invariants(db, sandbox) == {"failed": 2}


def test_a_dedicated_contact_still_gets_its_own_number_and_sender(
    stack, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.1)
    service, pipeline = stack()
    tenant = make_tenant()
    dedicated(service, tenant)
    cid = submit(service, tenant, body())
    assert drive(pipeline, cid) == "active"
    contact = row(db, cid)
    assert contact.request["whatsapp_sender"] == "dedicated" and contact.pool_sender_id is None
    assert [n["tag"] for n in sandbox.resources()["phone_numbers"]] == [cid]
    assert senders(db) == [] and routes(db) == {}
    info = service.get(tenant.account_id, tenant.assistant_ids[0], cid)
    assert info["address"] == sandbox.resources()["phone_numbers"][0]["address"]
    assert check_invariants(db, sandbox) == {"active": 1}


def test_the_own_wabas_room_decides_and_the_request_may_force_either(
    stack, make_tenant, sandbox, db
):
    service, _ = stack(whatsapp_own_waba_max_senders=1)
    tenant = make_tenant(assistants=4)
    dedicated(service, tenant)
    a, b, c, d = tenant.assistant_ids
    modes = [
        row(db, submit(service, tenant, body(), a)).request["whatsapp_sender"],  # room: 0 of 1
        row(db, submit(service, tenant, body(), b)).request["whatsapp_sender"],  # full
        row(db, submit(service, tenant, body(whatsapp_sender="dedicated"), c)).whatsapp_sender,
        row(db, submit(service, tenant, body(whatsapp_sender="shared"), d)).whatsapp_sender,
    ]
    assert modes == ["dedicated", "shared", "dedicated", "shared"]
    with pytest.raises(InvalidRequest) as refused:
        submit(service, make_tenant(), body(whatsapp_sender="pool"))
    assert "whatsapp_sender" in refused.value.fields
