"""Monthly fees and the grace period, through the real API, worker, CLI and billing pass."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from support.invariants import check_invariants
from support.services import settings_env

from worker.app.lifecycle import LifecycleService
from worker.store import credits
from worker.domain.billing import month_of, next_month
from worker.store.models import Event, LedgerEntry

PHONE = {"contact_type": "phone", "phone_country": "US"}
EMAIL = {"contact_type": "email", "email_local": "ada", "first_name": "Ada", "last_name": "L"}


class NoPublisher:
    def provision(self, contact_id: str, *, queue: str) -> None:
        """The worker in these tests is found by the reconciler instead."""


def lifecycle(db, lsettings) -> LifecycleService:
    return LifecycleService(db, lsettings, NoPublisher())


def months_ahead(count: int) -> datetime:
    """The first day of the month `count` months after this one, 12:00 UTC."""
    month = month_of(datetime.now(UTC))
    for _ in range(count):
        month = next_month(month)
    return datetime.fromisoformat(f"{month}-01T12:00:00+00:00")


def fees(db) -> list[tuple[str, str, int]]:
    with db.read() as session:
        rows = session.execute(
            select(LedgerEntry.contact_id, LedgerEntry.month, LedgerEntry.amount_cents)
            .where(LedgerEntry.kind == "monthly_fee")
            .order_by(LedgerEntry.id)
        ).all()
    return [tuple(r) for r in rows]


def cli(lsettings, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--json"],
        env=settings_env(lsettings), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_activation_charges_the_setup_and_the_month_and_a_pass_each_later_month_once(
    customer, worker, sandbox, db, lsettings
):
    acme = customer(credits_cents=5_000, assistants=2)
    phone = acme.wait(acme.create(PHONE), "active")
    email = acme.wait(acme.create(EMAIL, acme.tenant.assistant_ids[1]), "active")
    this_month = month_of(datetime.now(UTC))
    assert phone["billed_through"] == this_month and phone["monthly_cost"] == "1.50"
    assert sorted(fees(db)) == sorted(
        [(phone["id"], this_month, 150), (email["id"], this_month, 300)]
    )
    # 50.00 - setup 1.00 - 0.50 - fees 1.50 - 3.00
    assert acme.credits()["balance"] == "44.00"

    service = lifecycle(db, lsettings)
    assert service.billing_pass(now=months_ahead(0)).charged == 0  # this month is paid
    later = months_ahead(3)
    result = service.billing_pass(now=later)
    assert (result.charged, result.grace_period, result.deleted) == (6, 0, 0)
    assert service.billing_pass(now=later).charged == 0  # the same month again: nothing
    assert acme.credits()["balance"] == f"{44.00 - 3 * 4.50:.2f}"
    months = [m for c, m, _ in fees(db) if c == phone["id"]]
    assert months == sorted(months) and len(months) == len(set(months)) == 4  # oldest first
    assert acme.get(phone)["billed_through"] == month_of(later)

    ledger = acme.ledger(limit=3)
    assert [e["kind"] for e in ledger] == ["monthly_fee"] * 3
    assert {e["amount"] for e in ledger} <= {"-1.50", "-3.00"}
    assert ledger[0]["month"] == month_of(later)  # each contact paid oldest month first
    rest = acme.ledger(starting_after=ledger[-1]["id"], limit=1000)
    assert int(rest[0]["id"]) < int(ledger[-1]["id"])
    kinds = [e["kind"] for e in ledger + rest]
    assert kinds[-1] == "top_up" and kinds.count("capture") == 2 and kinds.count("reserve") == 2
    assert check_invariants(db, sandbox) == {"active": 2}


def test_two_passes_at_once_charge_each_contact_month_once(customer, worker, sandbox, db, lsettings):
    acme = customer(credits_cents=100_000, assistants=20)
    made = [acme.create(PHONE, a) for a in acme.tenant.assistant_ids]
    for contact in made:
        acme.wait(contact, "active")
    later = months_ahead(2)
    results = []

    def run() -> None:
        results.append(lifecycle(db, lsettings).billing_pass(now=later).charged)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 40  # 20 contacts, 2 months, whoever charged them
    assert len(fees(db)) == 60
    assert check_invariants(db, sandbox) == {"active": 20}


def test_unpaid_fee_starts_a_grace_period_a_later_pass_with_credits_ends_it(
    customer, worker, sandbox, db, lsettings
):
    acme = customer(credits_cents=400)  # setup 1.00 + this month 1.50, then 1.50 left
    phone = acme.wait(acme.create(PHONE), "active")
    assert acme.credits()["available"] == "1.50"
    service = lifecycle(db, lsettings)
    later = months_ahead(2)  # owes two months, can pay one
    result = service.billing_pass(now=later)
    assert (result.charged, result.grace_period) == (1, 1)
    grace = acme.get(phone)
    assert grace["status"] == "grace_period"
    assert grace["billed_through"] == month_of(months_ahead(1))
    assert grace["grace_ends_at"] == (later + timedelta(days=14)).isoformat().replace(
        "+00:00", "Z"
    )
    assert [n["tag"] for n in sandbox.resources()["phone_numbers"]] == [phone["id"]]  # working
    assert service.billing_pass(now=later + timedelta(days=1)).grace_period == 0  # once

    with db.write() as session:  # a top-up that does not bill by itself
        credits.top_up(session, acme.tenant.account_id, 500, "topup:test:later")
    result = service.billing_pass(now=later + timedelta(days=2))
    assert (result.charged, result.restored) == (1, 1)
    back = acme.get(phone)
    assert back["status"] == "active" and back["grace_ends_at"] is None
    assert back["billed_through"] == month_of(later)
    assert acme.credits()["available"] == "3.50"
    assert check_invariants(db, sandbox) == {"active": 1}


def test_a_top_up_pays_what_is_owed_and_ends_the_grace_period(
    customer, worker, sandbox, db, lsettings
):
    acme = customer(credits_cents=100)  # the setup cost only: the month goes unpaid
    phone = acme.wait(acme.create(PHONE), "grace_period")
    assert lifecycle(db, lsettings).billing_pass().grace_period == 0  # already in grace
    topped = cli(lsettings, "credits", "add", str(acme.tenant.account_id), "5.00")
    assert topped["applied"] is True and topped["available"] == "3.50"
    back = acme.get(phone)
    assert back["status"] == "active" and back["grace_ends_at"] is None
    assert back["billed_through"] == month_of(datetime.now(UTC))
    with db.read() as session:
        types = session.execute(
            select(Event.type).where(Event.contact_id == phone["id"]).order_by(Event.created_at)
        ).scalars().all()
    assert types == ["contact.active", "contact.grace_period", "contact.active"]
    assert check_invariants(db, sandbox) == {"active": 1}


def test_a_grace_period_that_ends_unpaid_deletes_the_contact(customer, worker, sandbox, db, lsettings):
    acme = customer(credits_cents=250)  # exactly setup and this month
    phone = acme.wait(acme.create(PHONE), "active")
    later = months_ahead(1)
    assert cli(lsettings, "billing", "run", "--now", later.isoformat()) == {
        "charged": 0, "grace_period": 1, "deleted": 0, "restored": 0,
    }
    expired = (later + timedelta(days=15)).isoformat()
    assert cli(lsettings, "billing", "run", "--now", expired)["deleted"] == 1
    gone = acme.wait(phone, "deleted")
    assert gone["deleted_reason"] == "unpaid"
    assert sandbox.resources()["phone_numbers"] == []
    # Nothing is charged for the months after, and a pass finds nothing owed.
    assert cli(lsettings, "billing", "run", "--now", months_ahead(4).isoformat())["charged"] == 0
    with db.read() as session:
        owed = session.execute(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "monthly_fee")
        ).scalar_one()
    assert owed == 1
    assert check_invariants(db, sandbox) == {"deleted": 1}


def test_activation_without_credits_for_the_month_enters_grace_at_once(
    customer, worker, sandbox, db
):
    acme = customer(credits_cents=100)  # the setup cost only
    phone = acme.wait(acme.create(PHONE), "grace_period")
    assert phone["charged"] and phone["address"]
    assert phone["billed_through"] < month_of(datetime.now(UTC))
    assert acme.credits() == {"balance": "0.00", "reserved": "0.00", "available": "0.00"}
    assert check_invariants(db, sandbox) == {"grace_period": 1}


def test_bad_ledger_parameters_are_clear_errors(customer):
    acme = customer()
    for params, field in (({"limit": 0}, "limit"), ({"starting_after": "x"}, "starting_after")):
        got = acme.api.get("/v0/credits/ledger", params=params, headers=acme.tenant.headers)
        assert got.status_code == 422, got.text
        assert field in got.json()["error"]["fields"]
