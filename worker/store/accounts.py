"""Accounts, their API keys (stored hashed) and their assistants."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from worker.domain.api_keys import hash_key, new_key
from worker.store.models import Account, ApiKey, Assistant


def create_account(session: Session, name: str) -> Account:
    account = Account(name=name, balance_cents=0, reserved_cents=0)
    session.add(account)
    session.flush()
    return account


def issue_key(session: Session, account_id: int) -> str:
    """Make a new API key for the account; the clear key exists only in the return value."""
    api_key = new_key()
    session.add(ApiKey(account_id=account_id, key_hash=hash_key(api_key), prefix=api_key[:8]))
    session.flush()
    return api_key


def account_for_key(session: Session, api_key: str) -> int | None:
    return session.execute(
        select(ApiKey.account_id).where(
            ApiKey.key_hash == hash_key(api_key), ApiKey.revoked_at.is_(None)
        )
    ).scalar_one_or_none()


def account_exists(session: Session, account_id: int) -> bool:
    return session.get(Account, account_id) is not None


def create_assistants(session: Session, account_id: int, name: str | None, count: int) -> list[int]:
    rows = [{"account_id": account_id, "name": name} for _ in range(count)]
    ids = session.execute(insert(Assistant).returning(Assistant.id), rows).scalars().all()
    return sorted(ids)


def assistant_owned(session: Session, account_id: int, assistant_id: int) -> bool:
    return (
        session.execute(
            select(Assistant.id).where(
                Assistant.id == assistant_id, Assistant.account_id == account_id
            )
        ).first()
        is not None
    )
