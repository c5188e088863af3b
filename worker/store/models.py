"""Tables, on SQLAlchemy 2; the migrations in worker/migrations create exactly these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# BigInteger autoincrement primary keys are not rowid aliases on SQLite; INTEGER is.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# HOT_ACCOUNT_ROW: the rows an activation writes for an account (its ledger rows, its event and
# the event's delivery) carry account_id without a foreign key. PostgreSQL checks a foreign key
# by locking the referenced row FOR KEY SHARE, so each activation locked the account's row
# (with others in flight, as a new MultiXact of them all) before the balance's update of that
# same row. Accounts are never deleted, and those rows take account_id from the contact's row
# or the authenticated request's account (migration 0013).


class Account(Base):
    __tablename__ = "accounts"
    # available = balance - reserved: every movement keeps it >= 0 with a conditional UPDATE,
    # but an activation's (credits.settle_and_commit) leaves it to this check.
    __table_args__ = (
        CheckConstraint("balance_cents >= reserved_cents", name="available_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    # Integer cents.
    balance_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    # SHA-256 of the key: keys are 256-bit random, so a fast hash is enough and the clear
    # key is never stored. `prefix` (first characters) lets an operator recognise a key.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Assistant(Base):
    __tablename__ = "assistants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The statuses of worker.domain.contacts' LIVE_STATUSES and BILLED_STATUSES, as the partial
# indexes' conditions (a migration changes them together).
LIVE_WHERE = text("status IN ('pending', 'provisioning', 'active', 'grace_period', 'deleting')")
BILLED_WHERE = text("status IN ('active', 'grace_period', 'deleting')")
# A live address is one contact's, except a pool sender's number: every contact routed to
# that sender has it as its address (migration 0021).
LIVE_ADDRESS_WHERE = text(
    "status IN ('active', 'grace_period', 'deleting') AND pool_sender_id IS NULL"
)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # One live contact per assistant and type, enforced by the database under concurrency.
        Index(
            "uq_contacts_live_per_type",
            "assistant_id",
            "contact_type",
            unique=True,
            sqlite_where=LIVE_WHERE,
            postgresql_where=LIVE_WHERE,
        ),
        # One live use of an address (a number or an email address), across all accounts;
        # a shared pool sender's number is many contacts' address.
        Index(
            "uq_contacts_live_address",
            "address",
            unique=True,
            sqlite_where=LIVE_ADDRESS_WHERE,
            postgresql_where=LIVE_ADDRESS_WHERE,
        ),
        # The billing pass: live contacts whose fees are not paid through this month.
        Index(
            "ix_contacts_billing_due",
            "billed_through",
            sqlite_where=BILLED_WHERE,
            postgresql_where=BILLED_WHERE,
        ),
        Index("ix_contacts_status_lease", "status", "lease_expires_at"),
        Index("ix_contacts_account_status", "account_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    assistant_id: Mapped[int] = mapped_column(ForeignKey("assistants.id"), index=True)
    contact_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    setup_cost_cents: Mapped[int] = mapped_column(BigInteger)
    monthly_cost_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    charged: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last month (`YYYY-MM`, UTC) whose fee is paid; set at activation.
    billed_through: Mapped[str | None] = mapped_column(String(7), nullable=True)
    grace_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Each acceptance (and each operator retry) reserves anew; ledger keys carry this number.
    reservation_seq: Mapped[int] = mapped_column(Integer, default=1)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # Worker lease: one runner at a time, taken by a conditional UPDATE.
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    # Leases taken over from a runner that died holding one; bounded, so a message that kills
    # its worker every time fails its contact instead of looping forever.
    takeovers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A clean-up (compensation, release) that met a permanent error: its code, and since when
    # (cleared when the contact ends `failed` or `deleted`). See worker/store/stuck.py.
    stuck_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stuck_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    # The account's provider connection an email contact is made through; None: the
    # platform's own settings (or no provider at all).
    connection_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    # The status in which the sweep last listed this contact's tag at the providers
    # (worker/runtime/sweep.py); due again once the status is another swept one.
    swept_status: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    # WhatsApp: `dedicated` or `shared` (worker/domain/whatsapp_pool.py; None: dedicated, as
    # every WhatsApp contact was before the pool), and the pool sender a shared one is routed
    # to (set with its route, `pool_routes`).
    whatsapp_sender: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    pool_sender_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)


# Only the contacts that have a batch or a connection (most have neither): every query on either
# column compares it to a value, and a contact with neither pays no entry when it moves.
for _column in (Contact.batch_id, Contact.connection_id):
    Index(
        f"ix_contacts_{_column.key}",
        _column,
        sqlite_where=_column.isnot(None),
        postgresql_where=_column.isnot(None),
    )

SWEEP_WHERE = text(
    "status IN ('active', 'failed', 'deleted') AND (swept_status IS NULL OR swept_status <> status)"
)
Index("ix_contacts_unswept", Contact.id, sqlite_where=SWEEP_WHERE, postgresql_where=SWEEP_WHERE)

Index(
    "ix_contacts_stuck",
    Contact.stuck_since,
    sqlite_where=text("stuck_since IS NOT NULL"),
    postgresql_where=text("stuck_since IS NOT NULL"),
)

# The oldest pending contact's age (worker/store/gauges.py): one probe at every scrape. Only
# pending contacts have an entry, so a contact pays one at acceptance and none after. `status`
# leads so that SQLite's planner sees the equality it needs to take the index for min().
Index(
    "ix_contacts_pending_since",
    Contact.status,
    Contact.updated_at,
    sqlite_where=text("status = 'pending'"),
    postgresql_where=text("status = 'pending'"),
)


class WorkerHeartbeat(Base):
    """A worker process (`host:pid`, the prefix of its lease owners) and its last heartbeat."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProviderConnection(Base):
    """An account's own Google Workspace or Microsoft 365: its domain, the non-secret settings
    (`config`) and the credentials, sealed by `worker.secrets.SecretBox` (never stored
    readable). `version` changes with the credentials (workers key their clients on it)."""

    __tablename__ = "provider_connections"
    __table_args__ = (
        UniqueConstraint("account_id", "provider", name="uq_provider_connections_account_provider"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    provider: Mapped[str] = mapped_column(String(16))
    domain: Mapped[str] = mapped_column(String(253))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    secrets_sealed: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(40))
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TwilioRegulatory(Base):
    """An account's regulatory documents for one country and number type, as Twilio
    confirmed them when they were set: the bundle (approved, for that country and type) and
    the address (its country, for the `local`/`foreign` address requirements)."""

    __tablename__ = "twilio_regulatory"
    __table_args__ = (
        UniqueConstraint(
            "account_id", "country", "number_type", name="uq_twilio_regulatory_account_type"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    country: Mapped[str] = mapped_column(String(2))
    number_type: Mapped[str] = mapped_column(String(16))
    bundle_sid: Mapped[str | None] = mapped_column(String(34))
    address_sid: Mapped[str | None] = mapped_column(String(34))
    address_country: Mapped[str | None] = mapped_column(String(2))
    info: Mapped[dict[str, Any]] = mapped_column(JSON)  # what Twilio answered (statuses, names)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TwilioRegulation(Base):
    """What Twilio's Regulations said, when last fetched, a country's number type needs for
    one end-user type: an approved bundle or not, and the address requirement (`none`,
    `any`, `local`, `foreign`). `sold`: Twilio has that number list in the country at all
    (its AvailablePhoneNumberCountry resource; a type it does not sell needs nothing and
    is refused). `stale`: a purchase Twilio refused since (21649, 21631) contradicts it, so
    it is not trusted and the next refresh fetches it first."""

    __tablename__ = "twilio_regulations"
    __table_args__ = (
        UniqueConstraint(
            "country", "number_type", "end_user_type", name="uq_twilio_regulations_entry"
        ),
        CheckConstraint(
            "address IN ('none', 'any', 'local', 'foreign')", name="address_requirement"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    country: Mapped[str] = mapped_column(String(2))
    number_type: Mapped[str] = mapped_column(String(16))  # ours: local, mobile, ..., toll_free
    end_user_type: Mapped[str] = mapped_column(String(16))  # individual, business
    bundle: Mapped[bool] = mapped_column(Boolean)
    address: Mapped[str] = mapped_column(String(8))
    regulation_sid: Mapped[str | None] = mapped_column(String(34), nullable=True)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stale: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    sold: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class TaskLease(Base):
    """A periodic pass that must run once at a time (`name`): who holds it, until when. A
    holder that dies leaves it to expire."""

    __tablename__ = "task_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ContactStep(Base):
    __tablename__ = "contact_steps"
    __table_args__ = (UniqueConstraint("contact_id", "name", name="uq_contact_steps_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerEntry(Base):
    __tablename__ = "credit_ledger"
    # By account: this one index (the ledger page, the billing pass).
    __table_args__ = (Index("ix_credit_ledger_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key: see HOT_ACCOUNT_ROW.
    account_id: Mapped[int] = mapped_column(BigId)
    contact_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    # topup | reserve | capture | release | monthly_fee; the amount is never negative here (the
    # API signs it by kind).
    kind: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    month: Mapped[str | None] = mapped_column(String(7), nullable=True)  # a fee's `YYYY-MM`
    # One row per movement: a retried step that tries to move the same money again collides.
    key: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "key", name="uq_idempotency_keys_account"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Event(Base):
    """Outbox: one row per terminal transition, written in the transition's transaction."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigId, index=True)  # see HOT_ACCOUNT_ROW
    contact_id: Mapped[str] = mapped_column(String(40), index=True)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the event's webhook delivery row exists; the relay finds the others through
    # a partial index, however old the event.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index(
            "ix_events_undispatched",
            "created_at",
            sqlite_where=text("dispatched_at IS NULL"),
            postgresql_where=text("dispatched_at IS NULL"),
        ),
    )


# --- webhooks --------------------------------------------------------------------------------


class WebhookEndpoint(Base):
    """An account's one webhook endpoint. The secret signs (HMAC) and so is kept readable."""

    __tablename__ = "webhook_endpoints"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(100))
    # After a rotation the old secret also signs until it expires (Standard Webhooks allows
    # several signatures), so receivers can switch without losing a delivery.
    previous_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # a 410
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """The delivery of one event: its status, its claim, and when it is next due."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_account", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), unique=True)
    account_id: Mapped[int] = mapped_column(BigId)  # see HOT_ACCOUNT_ROW
    contact_id: Mapped[str] = mapped_column(String(40), index=True)
    type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    # Attempts begun in this round (counted when claimed, so a send lost with its worker
    # counts too); a redrive starts a new round.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Claim: one sender at a time, taken by a conditional UPDATE; with no owner, the expiry
    # is the relay's "already published, wait until" mark.
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    # The retention job deletes the oldest first.
    __table_args__ = (Index("ix_webhook_attempts_attempted_at", "attempted_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)  # the first KiB
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Batch(Base):
    """A batch of contacts accepted together (`POST /v0/contact/batch`); its contacts carry
    its id in `contacts.batch_id`."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    total: Mapped[int] = mapped_column(Integer)  # contacts accepted into it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- the shared pool of WhatsApp senders (worker/domain/whatsapp_pool.py) -------------------


class PoolSender(Base):
    """A WhatsApp sender of the platform's shared pool: a Twilio number tagged
    `pool:<id>` and its sender under the platform's WABA. Grown by the contact that first
    needed it (`grower_contact_id`); at most one grows at a time (the partial unique index:
    concurrent contacts that need a new sender join the growing one instead of each growing)."""

    __tablename__ = "pool_senders"
    __table_args__ = (
        Index(
            "uq_pool_senders_growing",
            "status",
            unique=True,
            sqlite_where=text("status = 'growing'"),
            postgresql_where=text("status = 'growing'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16))
    phone_number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    number_sid: Mapped[str | None] = mapped_column(String(40), nullable=True)
    sender_sid: Mapped[str | None] = mapped_column(String(40), nullable=True)
    waba_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    grower_contact_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PoolRoute(Base):
    """A live route from a user (`user_whatsapp_number`, E.164) to an assistant on a pool
    sender: a message from that user to that sender is the assistant's. Deleted when its
    contact releases it; one per contact, and one per user and sender."""

    __tablename__ = "pool_routes"
    __table_args__ = (
        UniqueConstraint(
            "pool_sender_id", "user_whatsapp_number", name="uq_pool_routes_sender_user"
        ),
        UniqueConstraint("contact_id", name="uq_pool_routes_contact_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pool_sender_id: Mapped[int] = mapped_column(ForeignKey("pool_senders.id"))
    user_whatsapp_number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    assistant_id: Mapped[int] = mapped_column(BigInteger)
    contact_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
