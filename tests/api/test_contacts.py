"""The enqueue endpoint and contact reads, over real HTTP, with the store's state checked."""

from __future__ import annotations

import json

import redis
from sqlalchemy import select

from worker.store.models import Contact, LedgerEntry

PHONE = {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"}
EMAIL = {"contact_type": "email", "email_local": "Ada.Lovelace", "first_name": "Ada",
         "last_name": "Lovelace"}
WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+442071838750"}


def post(client, tenant, body, assistant=None, headers=None):
    assistant = assistant or tenant.assistant_ids[0]
    return client.post(f"/v0/assistant/{assistant}/contact", json=body,
                       headers=headers or tenant.headers)


def test_post_phone_records_pending_contact_and_reserves_cost(client, tenant, db):
    response = post(client, tenant, PHONE)
    assert response.status_code == 202
    info = response.json()["info"]
    assert info["status"] == "pending"
    assert info["contact_type"] == "phone"
    assert info["request"] == {"contact_type": "phone", "phone_country": "US",
                               "user_phone": "+14155552671",
                               "phone_number_type": "local"}
    assert info["setup_cost"] == "1.00"
    assert info["charged"] is False
    assert [s["name"] for s in info["steps"]] == ["find_number", "buy_number"]
    assert response.headers["location"].endswith(f"/contact/{info['id']}")
    credits = client.get("/v0/credits", headers=tenant.headers).json()["info"]
    assert credits == {"balance": "100.00", "reserved": "1.00", "available": "99.00"}
    with db.read() as session:
        ledger = session.execute(select(LedgerEntry.kind, LedgerEntry.amount_cents)
                                 .where(LedgerEntry.contact_id == info["id"])).all()
    assert ledger == [("reserve", 100)]


def test_post_publishes_provision_task_to_interactive_queue(client, tenant, redis_url):
    info = post(client, tenant, EMAIL).json()["info"]
    messages = redis.Redis.from_url(redis_url).lrange("interactive", 0, -1)
    assert len(messages) == 1
    message = json.loads(messages[0])
    assert message["headers"]["task"] == "worker.tasks.provision_contact"
    assert info["id"] in message["headers"]["argsrepr"]


def test_email_request_is_normalised_and_ignores_other_types_fields(client, tenant):
    body = {**EMAIL, "user_phone": "+14155552671", "phone_country": "ZZ"}
    info = post(client, tenant, body).json()["info"]
    # Without a connection, the platform's Google: the request records the suite it went to.
    assert info["request"] == {"contact_type": "email", "email_local": "ada.lovelace",
                               "first_name": "Ada", "last_name": "Lovelace",
                               "email_provider": "google"}
    assert info["setup_cost"] == "0.50"


def test_whatsapp_defaults_country_to_us(client, tenant):
    info = post(client, tenant, WHATSAPP).json()["info"]
    assert info["request"]["phone_country"] == "US"
    assert info["request"]["user_whatsapp_number"] == "+442071838750"


def test_get_and_list_contacts(client, tenant):
    first = post(client, tenant, PHONE).json()["info"]
    second = post(client, tenant, EMAIL).json()["info"]
    assistant = tenant.assistant_ids[0]
    got = client.get(f"/v0/assistant/{assistant}/contact/{first['id']}", headers=tenant.headers)
    assert got.status_code == 200
    assert got.json()["info"] == first
    listed = client.get(f"/v0/assistant/{assistant}/contact", headers=tenant.headers).json()
    assert [c["id"] for c in listed["info"]] == sorted([first["id"], second["id"]])
    page = client.get(f"/v0/assistant/{assistant}/contact",
                      params={"limit": 1, "starting_after": min(first["id"], second["id"])},
                      headers=tenant.headers).json()["info"]
    assert [c["id"] for c in page] == [max(first["id"], second["id"])]


def test_publish_failure_after_commit_still_answers_202_and_keeps_contact_pending(
    settings, db, tenant
):
    import httpx
    from support.services import free_port, serve_in_thread

    from api_stub.app import create_app
    from worker.runtime.celery_app import CeleryPublisher, create_celery

    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    publisher = CeleryPublisher(create_celery(settings, broker_url=dead_broker))
    app = create_app(settings, db=db, publisher=publisher)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        response = post(http, tenant, PHONE)
    assert response.status_code == 202
    with db.read() as session:
        contact = session.get(Contact, response.json()["info"]["id"])
        assert contact is not None and contact.status == "pending"
