"""DELETE through the real API, a real worker and the sandbox: release, cancellation, repeats."""

from __future__ import annotations

from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import wait_for

from worker.store.models import Event

PHONE = {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"}
EMAIL = {"contact_type": "email", "email_local": "ada", "first_name": "Ada", "last_name": "L"}
# A sender of its own (its number and sender tagged with the contact), not the shared pool's.
WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671",
            "whatsapp_sender": "dedicated"}


def tagged(sandbox, contact_id: str) -> list[str]:
    resources = sandbox.resources()
    return [
        kind
        for kind in ("phone_numbers", "users", "senders")
        for item in resources[kind]
        if item["tag"] == contact_id
    ]


def events_of(db, contact_id: str) -> list[str]:
    with db.read() as session:
        return list(
            session.execute(
                select(Event.type).where(Event.contact_id == contact_id).order_by(Event.created_at)
            ).scalars()
        )


def test_deleting_an_active_contact_of_each_type_releases_it_and_frees_the_slot(
    customer, worker, sandbox, db
):
    acme = customer(assistants=1)
    made = [acme.create(body) for body in (PHONE, EMAIL, WHATSAPP)]
    active = [acme.wait(c, "active") for c in made]
    assert all(tagged(sandbox, c["id"]) for c in active)

    answers = [acme.delete(c) for c in active]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert {a.json()["info"]["status"] for a in answers} == {"deleting"}
    deleted = [acme.wait(c, "deleted") for c in active]

    for contact in deleted:
        assert contact["deleted_reason"] == "requested"
        assert contact["deleted_at"] and contact["charged"]
        assert tagged(sandbox, contact["id"]) == []
        assert events_of(db, contact["id"]) == ["contact.active", "contact.deleted"]
    steps = {s["name"]: s["status"] for s in deleted[2]["steps"]}
    assert steps == {
        "find_number": "done",
        "buy_number": "done",
        "create_sender": "done",
        "await_sender_online": "done",
        "delete_sender": "done",
        "release_number": "done",
    }
    # A repeat answers the record unchanged; the old record stays readable; the slot is free.
    again = acme.delete(deleted[0])
    assert again.status_code == 200 and again.json()["info"] == deleted[0]
    fresh = acme.create(PHONE)
    assert fresh["id"] != deleted[0]["id"]
    assert acme.wait(fresh, "active")["address"]
    assert acme.get(deleted[0])["status"] == "deleted"
    assert check_invariants(db, sandbox) == {"deleted": 3, "active": 1}


def test_delete_while_provisioning_cancels_removes_what_was_made_and_charges_nothing(
    customer, worker, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=3600)  # the sender never comes online
    acme = customer(credits_cents=1_000)
    contact = acme.create(WHATSAPP)
    wait_for(lambda: "senders" in tagged(sandbox, contact["id"]), timeout=30)
    assert acme.get(contact)["status"] == "provisioning"

    answer = acme.delete(contact)
    assert answer.status_code == 202
    assert answer.json()["info"]["status"] == "deleting"
    assert answer.json()["info"]["deleted_reason"] == "cancelled"
    # A repeat answers the same contact: 202 while it is still deleting, 200 once deleted.
    # The release may finish between the two requests, so either answer is the contract's.
    again = acme.delete(contact)
    shown = again.json()["info"]
    assert (shown["id"], shown["deleted_reason"]) == (contact["id"], "cancelled")
    assert shown["status"] in ("deleting", "deleted"), shown
    assert again.status_code == {"deleting": 202, "deleted": 200}[shown["status"]]

    done = acme.wait(contact, "deleted")
    assert done["deleted_reason"] == "cancelled" and not done["charged"]
    last = acme.delete(contact)  # deleted now, whichever came first: unchanged
    assert last.status_code == 200 and last.json()["info"] == done
    assert tagged(sandbox, contact["id"]) == []
    assert acme.credits() == {"balance": "10.00", "reserved": "0.00", "available": "10.00"}
    kinds = [e["kind"] for e in acme.ledger()]
    assert kinds == ["release", "reserve", "top_up"]
    assert events_of(db, contact["id"]) == ["contact.deleted"]
    assert check_invariants(db, sandbox) == {"deleted": 1}


def test_delete_before_any_worker_ran_cancels_without_buying_anything(
    customer, spawn, lsettings, sandbox, db
):
    acme = customer(credits_cents=1_000)
    contact = acme.create(PHONE)
    assert acme.delete(contact).status_code == 202
    spawn("worker", lsettings, "--concurrency", "2")
    done = acme.wait(contact, "deleted")
    assert done["deleted_reason"] == "cancelled"
    assert [s["status"] for s in done["steps"]] == ["skipped", "skipped", "done"]
    # The task message's hint may have run the number search ahead of the lease (it reads
    # only); nothing was bought, so the release looked and found nothing to remove.
    assert sandbox.resources()["phone_numbers"] == []
    assert acme.credits()["available"] == "10.00"
    assert check_invariants(db, sandbox) == {"deleted": 1}


def test_deletion_survives_provider_errors_and_lost_answers(customer, worker, sandbox, db):
    acme = customer(assistants=3)
    made = [acme.create(body, a) for body, a in zip((PHONE, EMAIL, WHATSAPP),
                                                   acme.tenant.assistant_ids, strict=True)]
    for contact in made:
        acme.wait(contact, "active")
    # Half the requests fail and every delete is done but answered with an error.
    sandbox.set_faults(error_rate=0.5, drop_after_commit_rate=1.0)
    for contact in made:
        assert acme.delete(contact).status_code == 202
    for contact in made:
        acme.wait(contact, "deleted", timeout=90)
    sandbox.set_faults(error_rate=0, drop_after_commit_rate=0)
    assert check_invariants(db, sandbox) == {"deleted": 3}


def test_delete_answers_404_for_another_account_and_200_for_a_failed_contact(
    customer, worker, sandbox, db
):
    acme, other = customer(), customer()
    sandbox.reset(inventory_per_country=0)  # no numbers: the contact fails
    contact = acme.create(PHONE)
    failed = acme.wait(contact, "failed")
    assert other.api.delete(acme.url(contact), headers=other.tenant.headers).status_code == 404
    missing = {**contact, "id": "ct_" + "0" * 26}
    assert acme.delete(missing).status_code == 404
    answer = acme.delete(contact)
    assert answer.status_code == 200 and answer.json()["info"] == failed
