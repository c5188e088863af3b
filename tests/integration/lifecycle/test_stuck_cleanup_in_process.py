"""Compensation and release are one clean-up (issue 25, part 4): a failing contact whose
compensation is stuck, then deleted, stays stuck through its release without a second error
line, and finishes `deleted` once the credentials work. In-process pipeline, the real
database and the sandbox over HTTP."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs
from support.invariants import check_invariants
from support.pipeline import drive, submit

from worker.app.lifecycle import LifecycleService
from worker.providers import Providers
from worker.runtime.celery_app import CeleryPublisher, create_celery
from worker.runtime.pipeline import Pipeline
from worker.store.models import Contact, Event

WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"}


@pytest.fixture
def pipeline_with(db):
    made = []

    def make(settings):
        providers = Providers.from_settings(settings)
        made.append(providers)
        return Pipeline(db, providers, settings)

    yield make
    for providers in made:
        providers.close()


def read(db, cid) -> Contact:
    with db.read() as session:
        return session.get(Contact, cid)


def test_a_stuck_compensation_then_deleted_stays_stuck_once_and_finishes_deleted(
    psettings, service, make_tenant, sandbox, db, pipeline_with
):
    tenant = make_tenant()
    sandbox.set_faults(sender_online_after_s=3600)
    cid = submit(service, tenant, WHATSAPP)
    assert pipeline_with(psettings).run(cid, "runner").state == "wait"  # number and sender made
    revoked = pipeline_with(
        psettings.model_copy(
            update={"twilio_auth_token": psettings.twilio_auth_token.__class__("")}
        )
    )
    with capture_logs() as logs:
        assert revoked.run(cid, "runner").state == "stuck"  # failing: compensation refused
        stuck = read(db, cid)
        assert (stuck.status, stuck.error_code, stuck.stuck_reason) == (
            "provisioning",
            "auth_failed",
            "auth_failed",
        )

        lifecycle = LifecycleService(db, psettings, CeleryPublisher(create_celery(psettings)))
        answer = lifecycle.delete(tenant.account_id, tenant.assistant_ids[0], cid)
        assert answer.status == 202 and answer.body["info"]["stuck"] is True
        assert revoked.run(cid, "runner").state == "stuck"  # the release is refused too
    deleting = read(db, cid)
    assert (deleting.status, deleting.deleted_reason) == ("deleting", "cancelled")
    assert (deleting.stuck_reason, deleting.stuck_since) == ("auth_failed", stuck.stuck_since)
    lines = [e for e in logs if e["event"] == "compensation_stuck"]
    assert [(e["log_level"], e["cleanup"]) for e in lines] == [("error", "compensation")]
    retries = [e for e in logs if e["event"] == "compensation_retry"]
    assert [e["cleanup"] for e in retries] == ["release"]
    assert sandbox.resources()["phone_numbers"]  # nothing could be deleted yet

    assert drive(pipeline_with(psettings), cid) == "deleted"  # credentials work again
    done = read(db, cid)
    assert (done.stuck_reason, done.stuck_since) == (None, None)
    assert sandbox.resources()["phone_numbers"] == [] and sandbox.resources()["senders"] == []
    with db.read() as session:
        events = session.execute(select(Event.type).where(Event.contact_id == cid)).scalars()
        assert list(events) == ["contact.deleted"]
    assert check_invariants(db, sandbox) == {"deleted": 1}
