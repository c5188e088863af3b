"""An activation that also journals the plan's last step (`activate(..., last=...)`): on
PostgreSQL one statement moves the step, the contact, its event and its ledger rows, and a
second the balance; on SQLite the same, statement by statement. Both must leave the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from support.pipeline import submit
from support.webhooks import PHONE, set_endpoint_unchecked

from worker.domain.contacts import StepStatus
from worker.store import credits, journal
from worker.store import pipeline as store
from worker.store.models import (
    Account,
    Contact,
    ContactStep,
    Event,
    LedgerEntry,
    WebhookDelivery,
)

OWNER = "runner-1"


def leased(db, service, tenant, monthly_cents=0):
    """A phone contact under OWNER's lease, its number search done, its purchase next."""
    cid = submit(service, tenant, PHONE)
    now = datetime.now(UTC)
    with db.write() as session:
        session.execute(
            update(Contact).where(Contact.id == cid).values(monthly_cost_cents=monthly_cents)
        )
        lease = store.take_lease(session, cid, OWNER, now, 60)
        store.record_step(
            session,
            lease.steps["find_number"],
            StepStatus.DONE,
            now,
            owner=OWNER,
            detail={"candidates": ["+15550000001"]},
        )
    return lease


def activate(db, lease, owner=OWNER, events=None, commit=False):
    now = datetime.now(UTC)
    last = journal.mark_done(
        lease.steps["buy_number"], now, provider_id="PN1", detail={"phone_number": "+15550000001"}
    )
    ordered = sorted(lease.steps.values(), key=lambda s: s.position)
    with db.write() as session:
        return store.activate(
            session,
            lease.contact,
            ordered,
            owner,
            "+15550000001",
            now,
            events,
            last=last,
            commit=commit,
        )


def rows(db, cid):
    with db.read() as session:
        contact = session.get(Contact, cid)
        step = session.execute(
            select(ContactStep).where(
                ContactStep.contact_id == cid, ContactStep.name == "buy_number"
            )
        ).scalar_one()
        ledger = session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount_cents)
            .where(LedgerEntry.contact_id == cid)
            .order_by(LedgerEntry.id)
        ).all()
        events = (
            session.execute(select(Event).where(Event.contact_id == cid).order_by(Event.created_at))
            .scalars()
            .all()
        )
        deliveries = (
            session.execute(select(WebhookDelivery.status).where(WebhookDelivery.contact_id == cid))
            .scalars()
            .all()
        )
        account = session.get(Account, contact.account_id)
        return (
            contact,
            step,
            [tuple(r) for r in ledger],
            events,
            deliveries,
            (account.balance_cents, account.reserved_cents),
        )


@pytest.mark.parametrize("commit", [False, True], ids=["then-commit", "commit-with-balance"])
def test_activation_journals_the_step_moves_the_contact_charges_once_and_keeps_its_event(
    db, service, tenant, commit
):
    lease = leased(db, service, tenant, monthly_cents=300)
    events: list[str] = []
    assert activate(db, lease, events=events, commit=commit) is True
    contact, step, ledger, written, deliveries, balance = rows(db, lease.contact.id)
    assert (step.status, step.provider_id, step.detail) == (
        "done",
        "PN1",
        {"phone_number": "+15550000001"},
    )
    assert (contact.status, contact.address, contact.charged, contact.lease_owner) == (
        "active",
        "+15550000001",
        True,
        None,
    )
    assert contact.billed_through == datetime.now(UTC).strftime("%Y-%m")
    assert ledger == [("reserve", 100), ("capture", 100), ("monthly_fee", 300)]
    assert balance == (10_000 - 100 - 300, 0)
    assert [
        (e.type, e.payload["data"]["status"], e.payload["data"]["address"]) for e in written
    ] == [("contact.active", "active", "+15550000001")]
    assert written[0].dispatched_at is not None and deliveries == ["no_endpoint"]
    assert events == []  # nothing to publish: the event had nowhere to go
    assert lease.contact.status == "active"


@pytest.mark.parametrize("commit", [False, True], ids=["then-commit", "commit-with-balance"])
def test_with_an_endpoint_the_event_waits_for_its_delivery_task(db, service, tenant, commit):
    set_endpoint_unchecked(db, tenant.account_id, "https://hooks.example.com/x")
    lease = leased(db, service, tenant)
    events: list[str] = []
    assert activate(db, lease, events=events, commit=commit) is True
    _, _, ledger, written, deliveries, balance = rows(db, lease.contact.id)
    assert [e.id for e in written] == events
    assert written[0].dispatched_at is None and deliveries == []
    assert ledger == [("reserve", 100), ("capture", 100)]
    assert balance == (10_000 - 100, 0)


def test_a_lost_lease_journals_nothing_and_moves_nothing(db, service, tenant):
    lease = leased(db, service, tenant, monthly_cents=300)
    assert activate(db, lease, owner="someone-else") is False
    contact, step, ledger, written, deliveries, balance = rows(db, lease.contact.id)
    # The journal is the lease holder's: a runner that lost it writes nothing over it.
    assert (step.status, step.provider_id) == ("pending", None)
    assert (contact.status, contact.charged, contact.lease_owner) == ("provisioning", False, OWNER)
    assert ledger == [("reserve", 100)]
    assert written == [] and deliveries == []
    assert balance == (10_000, 100)
    # The runner's own copy is as it was, for the release that follows.
    assert (lease.contact.status, lease.contact.address, lease.contact.lease_owner) == (
        "provisioning",
        None,
        OWNER,
    )


def test_a_reservation_already_settled_rolls_the_whole_activation_back(db, service, tenant):
    lease = leased(db, service, tenant)
    cid = lease.contact.id
    with db.write() as session:
        credits.record(
            session,
            tenant.account_id,
            cid,
            "release",
            100,
            credits.settlement_key(cid, lease.contact.reservation_seq),
        )
    with pytest.raises(store.SettlementConflict):
        activate(db, lease)
    contact, step, ledger, written, _, balance = rows(db, cid)
    assert (step.status, contact.status, contact.charged) == ("pending", "provisioning", False)
    assert ledger == [("reserve", 100), ("release", 100)]
    assert written == []
    assert balance == (10_000, 100)


def test_a_fee_the_credits_cannot_cover_starts_the_grace_period_at_once(db, service, make_tenant):
    tenant = make_tenant(credits_cents=150)
    lease = leased(db, service, tenant, monthly_cents=300)
    assert activate(db, lease) is True
    contact, _, ledger, written, deliveries, balance = rows(db, lease.contact.id)
    assert contact.status == "grace_period" and contact.grace_ends_at is not None
    assert ledger == [("reserve", 100), ("capture", 100)]  # no fee row left behind
    assert balance == (50, 0)
    assert [e.type for e in written] == ["contact.active", "contact.grace_period"]
    assert deliveries == ["no_endpoint", "no_endpoint"]


def test_committed_with_the_balance_a_fee_the_credits_cannot_cover_leaves_all_as_it_was(
    db, service, make_tenant
):
    tenant = make_tenant(credits_cents=150)
    set_endpoint_unchecked(db, tenant.account_id, "https://hooks.example.com/x")
    lease = leased(db, service, tenant, monthly_cents=300)
    events = ["ev_earlier"]
    with pytest.raises(credits.FeeNotCovered):
        activate(db, lease, events=events, commit=True)
    contact, step, ledger, written, deliveries, balance = rows(db, lease.contact.id)
    assert (step.status, contact.status, contact.charged, contact.lease_owner) == (
        "pending",
        "provisioning",
        False,
        OWNER,
    )
    assert ledger == [("reserve", 100)] and written == [] and deliveries == []
    assert balance == (150, 100)
    assert events == ["ev_earlier"]  # no event of what was rolled back is to be published
    assert (lease.contact.status, lease.contact.address, lease.contact.lease_owner) == (
        "provisioning",
        None,
        OWNER,
    )
    # Again without `commit`, as the worker does: active, then at once in its grace period.
    assert activate(db, lease, events=events) is True
    contact, _, ledger, written, _, balance = rows(db, lease.contact.id)
    assert contact.status == "grace_period"
    assert ledger == [("reserve", 100), ("capture", 100)]
    assert balance == (50, 0)
    assert events == ["ev_earlier", *(e.id for e in written)]
