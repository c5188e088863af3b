"""The peer's API: one route, as the FastAPI tutorial writes it (a sync route, a session per
request from a dependency, the ORM, commit, then `task.delay()`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Literal

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from peer.models import SETUP_COST_CENTS, Account, Assistant, Contact, SessionLocal, hash_key
from peer.tasks import provision_contact

app = FastAPI(title="peer")


class ContactIn(BaseModel):
    contact_type: Literal["phone"]
    phone_country: str = Field(min_length=2, max_length=2)


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    assistant_id: int
    contact_type: str
    status: str
    created_at: datetime


def get_db() -> Iterator[Session]:
    with SessionLocal() as session:
        yield session


def current_account(authorization: str = Header(), db: Session = Depends(get_db)) -> Account:
    key = authorization.removeprefix("Bearer ").strip()
    account = db.scalar(select(Account).where(Account.api_key_hash == hash_key(key)))
    if account is None:
        raise HTTPException(401, "invalid API key")
    return account


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v0/assistant/{assistant_id}/contact", status_code=202, response_model=ContactOut)
def create_contact(
    assistant_id: int,
    body: ContactIn,
    account: Account = Depends(current_account),
    db: Session = Depends(get_db),
) -> Contact:
    assistant = db.get(Assistant, assistant_id)
    if assistant is None or assistant.account_id != account.id:
        raise HTTPException(404, "assistant not found")
    if account.balance_cents < SETUP_COST_CENTS:
        raise HTTPException(402, "not enough credits")
    contact = Contact(
        id=f"ct_{uuid.uuid4().hex}",
        account_id=account.id,
        assistant_id=assistant_id,
        contact_type=body.contact_type,
        phone_country=body.phone_country.upper(),
        setup_cost_cents=SETUP_COST_CENTS,
    )
    db.add(contact)
    db.commit()
    provision_contact.delay(contact.id)
    return contact
