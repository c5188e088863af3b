"""The peer's tables (its own database) and its session factory."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

TWILIO_SID = "AC00000000000000000000000000000000"
SETUP_COST_CENTS = 100


def now() -> datetime:
    return datetime.now(UTC)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    balance_cents: Mapped[int] = mapped_column(BigInteger, default=0)


class Assistant(Base):
    __tablename__ = "assistants"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    assistant_id: Mapped[int] = mapped_column(ForeignKey("assistants.id"), index=True)
    contact_type: Mapped[str] = mapped_column(String(16))
    phone_country: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    provider_sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    setup_cost_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


def database_url() -> str:
    url = os.environ["PEER_DATABASE_URL"]
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


engine = (
    create_engine(database_url(), pool_size=32, max_overflow=32)
    if os.environ.get("PEER_DATABASE_URL")
    else None
)
SessionLocal = sessionmaker(engine, expire_on_commit=False)


def create_schema(url: str, *, assistants: int, api_key: str, pending: int = 0) -> int:
    """Tables, one account with credits to spare and `assistants` assistants (ids 1..n), and
    `pending` pending phone contacts (for assistants 1..pending); returns the account id."""
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        Base.metadata.create_all(eng)
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, name, api_key_hash, balance_cents) "
                    "VALUES (1, 'bench', :h, 1000000000000)"
                ),
                {"h": hash_key(api_key)},
            )
            conn.execute(
                text(
                    "INSERT INTO assistants (id, account_id) "
                    "SELECT g, 1 FROM generate_series(1, :n) g"
                ),
                {"n": assistants},
            )
            conn.execute(
                text(
                    "INSERT INTO contacts (id, account_id, assistant_id, contact_type, "
                    "phone_country, status, setup_cost_cents, created_at, updated_at) "
                    "SELECT 'ct_peer' || g, 1, g, 'phone', 'US', 'pending', :cost, now(), now() "
                    "FROM generate_series(1, :n) g"
                ),
                {"n": pending, "cost": SETUP_COST_CENTS},
            )
            conn.execute(text("ANALYZE"))
    finally:
        eng.dispose()
    return 1
