"""The sweep lists each finished contact's tag once more and releases what it should not
hold (issue 25, part 3): real database, the sandbox over HTTP."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import dedicated, drive, submit

from worker.app.lifecycle import LifecycleService
from worker.providers import Providers
from worker.runtime.sweep import Sweeper
from worker.store.models import Contact

PHONE = {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"}
WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"}


@pytest.fixture
def providers(psettings):
    made = Providers.from_settings(psettings)
    yield made
    made.close()


@pytest.fixture
def sweeper(db, providers, psettings):
    return Sweeper(db, providers, psettings.model_copy(update={"sweep_after_s": 0}))


def left_behind(providers, contact_id: str, country: str = "US") -> str:
    """A number bought with the contact's tag by a runner that had lost it (frozen during its
    purchase while the runner that took over bought its own)."""
    candidate = providers.numbers.search_available(country, 1)[0]
    return providers.numbers.buy(candidate, contact_id).phone_number


def tagged(sandbox, contact_id: str) -> list[str]:
    return [n["address"] for n in sandbox.resources()["phone_numbers"] if n["tag"] == contact_id]


def test_an_active_contact_keeps_only_its_journals_number(
    service, pipeline, providers, sweeper, tenant, sandbox, db
):
    cid = submit(service, tenant, PHONE)
    assert drive(pipeline, cid) == "active"
    (kept,) = tagged(sandbox, cid)
    extra = left_behind(providers, cid)
    assert sweeper.run() == {"contacts": 1, "numbers": 1}
    assert tagged(sandbox, cid) == [kept] and extra != kept
    assert check_invariants(db, sandbox) == {"active": 1}
    # Swept once in its status: the next pass lists nothing.
    requests = sandbox.stats()["requests"]
    assert sweeper.run() == {}
    assert sandbox.stats()["requests"] == requests


def test_a_deleted_contact_is_swept_again_and_holds_nothing(
    service, pipeline, providers, sweeper, tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0)
    dedicated(service, tenant)  # a sender of its own
    cid = submit(service, tenant, WHATSAPP)
    assert drive(pipeline, cid) == "active"
    assert sweeper.run() == {"contacts": 1}  # nothing extra while it was active
    lifecycle = LifecycleService(db, service.settings, service.publisher)
    assert lifecycle.delete(tenant.account_id, tenant.assistant_ids[0], cid).status == 202
    assert drive(pipeline, cid) == "deleted"
    extra = left_behind(providers, cid, "US")
    providers.senders.create(extra)
    assert sweeper.run() == {"contacts": 1, "numbers": 1, "senders": 1}
    assert tagged(sandbox, cid) == [] and sandbox.resources()["senders"] == []
    assert check_invariants(db, sandbox) == {"deleted": 1}
    with db.read() as session:
        assert session.execute(select(Contact.swept_status)).scalar_one() == "deleted"


def test_a_contact_is_swept_only_after_the_sweep_delay(
    service, pipeline, providers, psettings, tenant, sandbox, db
):
    cid = submit(service, tenant, PHONE)
    assert drive(pipeline, cid) == "active"
    left_behind(providers, cid)
    later = Sweeper(db, providers, psettings.model_copy(update={"sweep_after_s": 3600}))
    assert later.run() == {}
    assert len(tagged(sandbox, cid)) == 2
