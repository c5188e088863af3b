"""Failing fast when nothing was created, and a compensation stuck on a permanent error that
shows up everywhere an operator looks (issue 18, items 1 and 2). In-process pipeline, the real
database, the sandbox over HTTP, the CLI as a subprocess and the API over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs
from support.pipeline import drive, submit
from support.services import serve_in_thread, settings_env

from api_stub.app import create_app
from worker.providers import Providers
from worker.runtime.pipeline import Pipeline
from worker.store.models import Account, Contact, ContactStep, Event

PHONE = {"contact_type": "phone", "phone_country": "US"}
EMAIL = {"contact_type": "email", "email_local": "ada", "first_name": "Ada", "last_name": "L"}
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


def reserved(db, account_id):
    with db.read() as session:
        return session.get(Account, account_id).reserved_cents


def events_of(db, cid):
    with db.read() as session:
        return [e.type for e in session.execute(select(Event).where(Event.contact_id == cid))
                .scalars()]


@pytest.mark.parametrize(("body", "empty"), [(PHONE, "twilio_auth_token"),
                                             (EMAIL, "google_access_token")])
def test_refused_credentials_fail_a_contact_at_once_without_compensation(
    psettings, service, make_tenant, sandbox, db, pipeline_with, body, empty
):
    settings = psettings.model_copy(update={empty: psettings.twilio_auth_token.__class__("")})
    tenant = make_tenant()
    cid = submit(service, tenant, body)
    with capture_logs() as logs:
        assert pipeline_with(settings).run(cid, "runner").state == "failed"
    with db.read() as session:
        contact = session.get(Contact, cid)
        steps = session.execute(select(ContactStep).where(ContactStep.contact_id == cid)).scalars()
        attempts = {s.name: s.attempts for s in steps}
    assert (contact.status, contact.error_code) == ("failed", "auth_failed")
    assert reserved(db, tenant.account_id) == 0  # the reservation is released
    assert events_of(db, cid) == ["contact.failed"]
    # Only the refused requests reached the provider: no look-up or delete to compensate.
    stats = sandbox.stats()
    assert stats["requests"] == stats["by_status"].get("401"), stats
    assert not [e for e in logs if e["event"] in ("compensation_retry", "compensation_stuck")]
    assert all(n == 0 or name == "find_number" for name, n in attempts.items()), attempts


def stuck_whatsapp(psettings, service, tenant, sandbox, pipeline_with):
    """A WhatsApp contact that bought its number and registered its sender, then meets
    refused credentials: its compensation cannot delete what it made."""
    sandbox.set_faults(sender_online_after_s=3600)
    cid = submit(service, tenant, WHATSAPP)
    assert pipeline_with(psettings).run(cid, "runner").state == "wait"
    revoked = psettings.model_copy(update={"twilio_auth_token":
                                           psettings.twilio_auth_token.__class__("")})
    return cid, pipeline_with(revoked)


def test_compensation_meeting_refused_credentials_is_stuck_and_slows_to_the_capped_cadence(
    psettings, service, make_tenant, sandbox, db, pipeline_with
):
    tenant = make_tenant()
    cid, revoked = stuck_whatsapp(psettings, service, tenant, sandbox, pipeline_with)
    before = datetime.now(UTC)
    with capture_logs() as logs:
        first = revoked.run(cid, "runner")
        second = revoked.run(cid, "runner")  # an operator's nudge, or the reconciler
    assert (first.state, first.again_in_s) == ("stuck", None)  # no countdown message held
    assert second.state == "stuck"
    with db.read() as session:
        contact = session.get(Contact, cid)
    assert contact.status == "provisioning" and contact.error_code == "auth_failed"
    assert contact.stuck_reason == "auth_failed" and contact.stuck_since >= before
    # Next try after PROVISIONER_COMPENSATION_STUCK_RETRY_S (900 s), not within a minute.
    assert contact.lease_expires_at >= before + timedelta(seconds=899)
    stuck_lines = [e for e in logs if e["event"] == "compensation_stuck"]
    assert len(stuck_lines) == 1 and stuck_lines[0]["log_level"] == "error"
    assert sandbox.resources()["phone_numbers"]  # still there: nothing could delete it


def test_stuck_contact_shows_in_jobs_stuck_the_gauge_and_the_api(
    psettings, service, make_tenant, sandbox, db, pipeline_with
):
    tenant = make_tenant()
    cid, revoked = stuck_whatsapp(psettings, service, tenant, sandbox, pipeline_with)
    assert revoked.run(cid, "runner").state == "stuck"

    done = subprocess.run([sys.executable, "-m", "worker.cli", "jobs", "stuck", "--json"],
                          env=settings_env(psettings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["stuck"]
    assert (row["id"], row["stuck_reason"], row["error"]["code"]) == (cid, "auth_failed",
                                                                       "auth_failed")
    assert row["age_s"] >= 0 and row["stuck_since"]

    with serve_in_thread(create_app(psettings, db=db)) as api, httpx.Client(base_url=api) as http:
        assistant = tenant.assistant_ids[0]
        view = http.get(f"/v0/assistant/{assistant}/contact/{cid}", headers=tenant.headers)
        assert view.json()["info"]["stuck"] is True
        metrics = http.get("/metrics").text
    assert 'provisioner_contacts_stuck{reason="auth_failed"} 1.0' in metrics


def test_stuck_compensation_finishes_once_the_cause_is_fixed(
    psettings, service, make_tenant, sandbox, db, pipeline_with
):
    tenant = make_tenant()
    cid, revoked = stuck_whatsapp(psettings, service, tenant, sandbox, pipeline_with)
    assert revoked.run(cid, "runner").state == "stuck"
    assert drive(pipeline_with(psettings), cid) == "failed"  # credentials restored
    with db.read() as session:
        contact = session.get(Contact, cid)
    assert (contact.status, contact.stuck_since, contact.stuck_reason) == ("failed", None, None)
    assert sandbox.resources()["phone_numbers"] == [] and sandbox.resources()["senders"] == []
    assert reserved(db, tenant.account_id) == 0
    assert events_of(db, cid) == ["contact.failed"]
