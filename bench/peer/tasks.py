"""The peer's Celery app and its one task: search, buy, then mark the contact active and
charge the balance. Retries on any HTTP error with Celery's `autoretry_for`."""

from __future__ import annotations

import os

import httpx
from celery import Celery
from sqlalchemy import update

from peer.models import TWILIO_SID, Account, Contact, SessionLocal, now

celery = Celery("peer", broker=os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"))
celery.conf.update(task_default_queue="peer", broker_connection_retry_on_startup=True)

client = httpx.Client(
    base_url=f"{os.environ.get('PEER_SANDBOX_URL', '')}/2010-04-01/Accounts/{TWILIO_SID}",
    auth=(TWILIO_SID, "x"),
    timeout=10.0,
    limits=httpx.Limits(max_connections=100),
)


@celery.task(
    name="peer.provision_contact",
    autoretry_for=(httpx.HTTPError,),
    retry_backoff=True,
    retry_kwargs={"max_retries": 5},
)
def provision_contact(contact_id: str) -> None:
    with SessionLocal() as session:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.status == "active":
            return
        contact.status = "provisioning"
        contact.started_at = contact.started_at or now()
        session.commit()

        found = client.get(
            f"/AvailablePhoneNumbers/{contact.phone_country}/Local.json", params={"PageSize": 20}
        )
        found.raise_for_status()
        number = found.json()["available_phone_numbers"][0]["phone_number"]
        bought = client.post(
            "/IncomingPhoneNumbers.json", data={"PhoneNumber": number, "FriendlyName": contact.id}
        )
        bought.raise_for_status()

        contact.status = "active"
        contact.address = bought.json()["phone_number"]
        contact.provider_sid = bought.json()["sid"]
        contact.updated_at = now()
        session.execute(
            update(Account)
            .where(Account.id == contact.account_id)
            .values(balance_cents=Account.balance_cents - contact.setup_cost_cents)
        )
        session.commit()
