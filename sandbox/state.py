"""The sandbox's in-memory world: sold numbers, WhatsApp senders, Google users and webhook sinks.

All mutation happens under one `threading.Lock` that is never held across an `await`,
so concurrent purchases of one number can never sell it twice. Methods return copies
of records, never the live objects.
"""

from __future__ import annotations

import copy
import hashlib
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sandbox.inventory import friendly_format, inventory_for, locate

WHATSAPP_OTP_FROM = "+16502650000"  # the sandbox's stand-in for Meta's OTP sender


class StateError(Exception):
    """Base of the sandbox's domain errors; each provider module maps them to its wire format."""


class NotAvailable(StateError):
    """The phone number is not in the inventory or already sold."""


class NotFound(StateError):
    """No such resource (for this account)."""


class AlreadyExists(StateError):
    """A resource with the same unique key exists."""


class Refused(StateError):
    """A purchase the regulatory rules refuse: Twilio's `code` and `message`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotOwned(StateError):
    """The phone number is not an IncomingPhoneNumber of the calling account."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PhoneNumberRecord:
    sid: str
    account_sid: str
    phone_number: str
    country: str
    friendly_name: str
    friendly_name_set: bool
    date_created: datetime
    date_updated: datetime
    fields: dict[str, str] = field(default_factory=dict)  # VoiceUrl, SmsUrl, ... as sent
    number_type: str = "local"
    address_requirements: str = "none"
    bundle_sid: str | None = None
    address_sid: str | None = None

    @property
    def tag(self) -> str | None:
        return self.friendly_name if self.friendly_name_set else None


class WabaUnknown(StateError):
    """No such WhatsApp Business Account, or it is linked to another Twilio account."""


class WabaFull(StateError):
    """The WABA already has as many senders as Meta allows it."""


class NotPendingVerification(StateError):
    """A verification code was sent for a sender that is not waiting for one."""


class WrongCode(StateError):
    """The verification code is not the one sent to the number."""


# A sender's onboarding, as Twilio's OpenAPI description lists its statuses.
CREATING = "CREATING"
PENDING_VERIFICATION = "PENDING_VERIFICATION"
VERIFYING = "VERIFYING"
TWILIO_REVIEW = "TWILIO_REVIEW"
ONLINE = "ONLINE"
OFFLINE = "OFFLINE"
MAX_WRONG_CODES = 3
DEFAULT_WABA_ID = "100000000000001"  # registered at every reset, for the dev stack and tests
DEFAULT_WABA_LIMIT = 100_000


@dataclass(frozen=True)
class Onboarding:
    """How new senders onboard (`PUT /_sandbox/twilio/senders/onboarding`): the share that
    must verify by a code sent by SMS, and how long VERIFYING and TWILIO_REVIEW last. How long
    CREATING lasts is the `sender_online_after_s` fault."""

    verification_rate: float = 0.0
    verifying_s: float = 2.0
    review_s: float = 0.0


@dataclass
class WabaRecord:
    waba_id: str
    sender_limit: int
    account_sid: str | None = None  # None: any account may register senders under it


@dataclass
class MessageRecord:
    """An SMS received by one of our numbers (the verification code Meta sends)."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    visible_at: float  # time.monotonic(): not received before then
    date_sent: datetime


@dataclass
class SenderRecord:
    sid: str
    account_sid: str
    sender_id: str
    phone_number: str
    number_sid: str
    created_at: float  # time.monotonic() at creation, for the timing of each status
    date_created: datetime
    body: dict[str, object]  # configuration, webhook, profile as sent
    number_tag: str | None  # the number's tag when the number is gone
    number_released: bool = False
    waba_id: str | None = None
    verification_code: str | None = None  # set: the sender must be verified with it
    verified_at: float | None = None
    wrong_codes: int = 0
    # (code, message) once taken offline by the control or by too many wrong codes.
    offline: tuple[str, str] | None = None
    # VERIFYING's and TWILIO_REVIEW's durations, fixed at creation (see Onboarding).
    verifying_s: float = 0.0
    review_s: float = 0.0

    def status(self, online_after_s: float, now: float | None = None) -> str:
        if self.number_released or self.offline is not None:
            return OFFLINE
        now = time.monotonic() if now is None else now
        start = self.created_at + online_after_s
        if now < start:
            return CREATING
        if self.verification_code is not None:
            if self.verified_at is None:
                return PENDING_VERIFICATION
            start = max(start, self.verified_at) + self.verifying_s
            if now < start:
                return VERIFYING
        if now < start + self.review_s:
            return TWILIO_REVIEW
        return ONLINE


@dataclass
class UserRecord:
    id: str
    primary_email: str
    given_name: str
    family_name: str
    password_hash: str
    change_password_at_next_login: bool
    external_ids: list[dict[str, object]]
    creation_time: datetime
    etag: str
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        for entry in self.external_ids:
            if entry.get("type") == "custom" and entry.get("customType") == "contact_id":
                value = entry.get("value")
                return str(value) if value is not None else None
        return None


@dataclass
class SinkDelivery:
    headers: dict[str, str]
    body: str
    received_at: str


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def hash_password(password: str) -> str:
    """Only a salted hash is kept; the sandbox never needs the password back."""
    salt = secrets.token_hex(8)
    digest = hashlib.sha256((salt + password).encode()).hexdigest()
    return f"sha256${salt}${digest}"


class SandboxState:
    """Everything a reset clears except the fault configuration (see `faults.py`)."""

    def __init__(self, inventory_per_country: int) -> None:
        self._lock = threading.Lock()
        self._init(inventory_per_country)

    def _init(self, inventory_per_country: int) -> None:
        self.inventory_per_country = inventory_per_country
        self._numbers: dict[str, PhoneNumberRecord] = {}
        self._sold: dict[str, str] = {}  # E.164 -> PN sid
        self._cursor: dict[tuple[str, str], int] = {}  # (country, type) -> next search start
        self._senders: dict[str, SenderRecord] = {}
        self._sender_by_number: dict[str, str] = {}  # E.164 -> XE sid
        self._users: dict[str, UserRecord] = {}
        self._user_by_email: dict[str, str] = {}  # lower-case email -> id
        self._sinks: dict[str, list[SinkDelivery]] = {}
        self._sink_status: dict[str, int] = {}
        self._sink_delay_s: dict[str, float] = {}
        self._wabas: dict[str, WabaRecord] = {
            DEFAULT_WABA_ID: WabaRecord(DEFAULT_WABA_ID, DEFAULT_WABA_LIMIT)
        }
        self._messages: list[MessageRecord] = []
        self.onboarding = Onboarding()
        self._onboarding_rng = random.Random(0)

    def reset(self, inventory_per_country: int) -> None:
        with self._lock:
            self._init(inventory_per_country)

    # --- phone numbers -------------------------------------------------------------

    def available(
        self,
        country: str,
        limit: int,
        accept: Callable[[str], bool] | None = None,
        number_type: str = "local",
    ) -> list[str] | None:
        """Up to `limit` unsold numbers of `country` and `number_type` (None if that list is
        not sold).

        Successive searches start where the previous one stopped (wrapping around), so
        concurrent searchers are offered different numbers, much as the real service
        offers varying sets.
        """
        inv = inventory_for(country, number_type)
        if inv is None:
            return None
        pool = inv.first(self.inventory_per_country)
        if not pool:
            return []
        found: list[str] = []
        key = (inv.country, number_type)
        with self._lock:
            start = self._cursor.get(key, 0) % len(pool)
            last = start
            for step in range(len(pool)):
                if len(found) >= limit:
                    break
                idx = (start + step) % len(pool)
                number = pool[idx]
                if number in self._sold or (accept is not None and not accept(number)):
                    continue
                found.append(number)
                last = idx
            if found:
                self._cursor[key] = last + 1
        return found

    def buy(
        self,
        account_sid: str,
        e164: str,
        friendly_name: str | None,
        fields: dict[str, str],
        check: Callable[[str, str], str] | None = None,
        bundle_sid: str | None = None,
        address_sid: str | None = None,
    ) -> PhoneNumberRecord:
        """Sell `e164`; `check(country, number_type)` raises `Refused` when the regulatory
        rules refuse the purchase, else answers the number's `address_requirements`."""
        located = locate(e164, self.inventory_per_country)
        if located is None:
            raise NotAvailable(e164)
        country, number_type = located
        with self._lock:
            if e164 in self._sold:
                raise NotAvailable(e164)
        requirement = check(country, number_type) if check is not None else "none"
        now = utcnow()
        with self._lock:
            if e164 in self._sold:
                raise NotAvailable(e164)
            record = PhoneNumberRecord(
                sid=new_sid("PN"),
                account_sid=account_sid,
                phone_number=e164,
                country=country,
                friendly_name=friendly_name if friendly_name is not None else friendly_format(e164),
                friendly_name_set=friendly_name is not None,
                date_created=now,
                date_updated=now,
                fields=dict(fields),
                number_type=number_type,
                address_requirements=requirement,
                bundle_sid=bundle_sid,
                address_sid=address_sid,
            )
            self._numbers[record.sid] = record
            self._sold[e164] = record.sid
            return copy.deepcopy(record)

    def get_number(self, account_sid: str, sid: str) -> PhoneNumberRecord:
        with self._lock:
            return copy.deepcopy(self._owned_number(account_sid, sid))

    def list_numbers(
        self, account_sid: str, friendly_name: str | None, phone_number: str | None
    ) -> list[PhoneNumberRecord]:
        with self._lock:
            return [
                copy.deepcopy(r)
                for r in self._numbers.values()
                if r.account_sid == account_sid
                and (friendly_name is None or r.friendly_name == friendly_name)
                and (phone_number is None or r.phone_number == phone_number)
            ]

    def update_number(
        self, account_sid: str, sid: str, friendly_name: str | None, fields: dict[str, str]
    ) -> PhoneNumberRecord:
        with self._lock:
            record = self._owned_number(account_sid, sid)
            if friendly_name is not None:
                record.friendly_name = friendly_name
                record.friendly_name_set = True
            record.fields.update(fields)
            record.date_updated = utcnow()
            return copy.deepcopy(record)

    def release_number(self, account_sid: str, sid: str) -> None:
        """Releases the number to the inventory; a sender registered on it goes OFFLINE."""
        with self._lock:
            record = self._owned_number(account_sid, sid)
            del self._numbers[sid]
            self._sold.pop(record.phone_number, None)
            sender_sid = self._sender_by_number.pop(record.phone_number, None)
            if sender_sid is not None and sender_sid in self._senders:
                sender = self._senders[sender_sid]
                sender.number_released = True
                sender.number_tag = record.tag

    def _owned_number(self, account_sid: str, sid: str) -> PhoneNumberRecord:
        record = self._numbers.get(sid)
        if record is None or record.account_sid != account_sid:
            raise NotFound(sid)
        return record

    # --- WhatsApp senders ----------------------------------------------------------

    def create_sender(
        self,
        account_sid: str,
        sender_id: str,
        e164: str,
        body: dict[str, object],
        waba_id: str,
        online_after_s: float,
    ) -> SenderRecord:
        """Registers the sender under `waba_id`. A share of new senders (Onboarding) must be
        verified: the code is sent by SMS to the number when CREATING ends."""
        with self._lock:
            number_sid = self._sold.get(e164)
            number = self._numbers.get(number_sid) if number_sid else None
            if number is None or number.account_sid != account_sid:
                raise NotOwned(e164)
            waba = self._wabas.get(waba_id)
            if waba is None or waba.account_sid not in (None, account_sid):
                raise WabaUnknown(waba_id)
            if e164 in self._sender_by_number:
                raise AlreadyExists(sender_id)
            used = sum(1 for s in self._senders.values() if s.waba_id == waba_id)
            if used >= waba.sender_limit:
                raise WabaFull(waba_id)
            onboarding = self.onboarding
            needs_code = self._onboarding_rng.random() < onboarding.verification_rate
            record = SenderRecord(
                sid=new_sid("XE"),
                account_sid=account_sid,
                sender_id=sender_id,
                phone_number=e164,
                number_sid=number.sid,
                created_at=time.monotonic(),
                date_created=utcnow(),
                body=copy.deepcopy(body),
                number_tag=number.tag,
                waba_id=waba_id,
                verification_code=f"{secrets.randbelow(10**6):06d}" if needs_code else None,
                verifying_s=onboarding.verifying_s,
                review_s=onboarding.review_s,
            )
            if record.verification_code is not None:
                code = record.verification_code
                self._messages.append(
                    MessageRecord(
                        sid=new_sid("SM"),
                        account_sid=account_sid,
                        to=e164,
                        from_=WHATSAPP_OTP_FROM,
                        body=f"Your WhatsApp Business code {code[:3]}-{code[3:]}. "
                        "Don't share this code with others.",
                        visible_at=record.created_at + online_after_s,
                        date_sent=record.date_created + timedelta(seconds=online_after_s),
                    )
                )
            self._senders[record.sid] = record
            self._sender_by_number[e164] = record.sid
            return copy.deepcopy(record)

    def update_sender(
        self,
        account_sid: str,
        sid: str,
        body: dict[str, object],
        code: str | None,
        online_after_s: float,
    ) -> SenderRecord:
        """Merges `body`'s sections; a `code` verifies a sender in PENDING_VERIFICATION."""
        with self._lock:
            record = self._owned_sender(account_sid, sid)
            if code is not None:
                if record.status(online_after_s) != PENDING_VERIFICATION:
                    raise NotPendingVerification(sid)
                if code != record.verification_code:
                    record.wrong_codes += 1
                    if record.wrong_codes >= MAX_WRONG_CODES:
                        record.offline = (
                            "63100",
                            f"Phone number verification failed after {MAX_WRONG_CODES} wrong codes",
                        )
                    raise WrongCode(sid)
                record.verified_at = time.monotonic()
            for section in ("configuration", "webhook", "profile"):
                value = body.get(section)
                if isinstance(value, dict):
                    merged = dict(record.body.get(section) or {})  # type: ignore[call-overload]
                    merged.update(value)
                    record.body[section] = merged
            return copy.deepcopy(record)

    def take_offline(self, sid: str, code: str, message: str) -> SenderRecord:
        with self._lock:
            record = self._senders.get(sid)
            if record is None:
                raise NotFound(sid)
            record.offline = (code, message)
            return copy.deepcopy(record)

    def put_waba(self, waba_id: str, sender_limit: int, account_sid: str | None) -> None:
        with self._lock:
            self._wabas[waba_id] = WabaRecord(waba_id, sender_limit, account_sid)

    def wabas(self) -> list[tuple[WabaRecord, int]]:
        with self._lock:
            return [
                (copy.deepcopy(w), sum(1 for s in self._senders.values() if s.waba_id == w.waba_id))
                for w in self._wabas.values()
            ]

    def set_onboarding(self, onboarding: Onboarding, seed: int | None = None) -> None:
        with self._lock:
            self.onboarding = onboarding
            if seed is not None:
                self._onboarding_rng = random.Random(seed)

    def messages(
        self, account_sid: str | None, to: str | None, now: float | None = None
    ) -> list[MessageRecord]:
        """SMS received so far (newest first, as Twilio lists Messages)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            found = [
                copy.deepcopy(m)
                for m in self._messages
                if m.visible_at <= now
                and (account_sid is None or m.account_sid == account_sid)
                and (to is None or m.to == to)
            ]
        return found[::-1]

    def sms_url(self, account_sid: str, e164: str) -> str | None:
        """The SmsUrl of the account's number `e164`, if it has one."""
        with self._lock:
            number_sid = self._sold.get(e164)
            number = self._numbers.get(number_sid) if number_sid else None
            if number is None or number.account_sid != account_sid:
                return None
            return number.fields.get("SmsUrl") or None

    def get_sender(self, account_sid: str, sid: str) -> SenderRecord:
        with self._lock:
            return copy.deepcopy(self._owned_sender(account_sid, sid))

    def list_senders(self, account_sid: str) -> list[SenderRecord]:
        with self._lock:
            return [
                copy.deepcopy(s) for s in self._senders.values() if s.account_sid == account_sid
            ]

    def delete_sender(self, account_sid: str, sid: str) -> None:
        with self._lock:
            record = self._owned_sender(account_sid, sid)
            del self._senders[sid]
            if self._sender_by_number.get(record.phone_number) == sid:
                del self._sender_by_number[record.phone_number]

    def _owned_sender(self, account_sid: str, sid: str) -> SenderRecord:
        record = self._senders.get(sid)
        if record is None or record.account_sid != account_sid:
            raise NotFound(sid)
        return record

    def sender_tag(self, sender: SenderRecord) -> str | None:
        """A sender carries the tag of the number it was registered for (live if it exists)."""
        with self._lock:
            number = self._numbers.get(sender.number_sid)
            return number.tag if number is not None else sender.number_tag

    # --- Google users --------------------------------------------------------------

    def create_user(self, record: UserRecord) -> UserRecord:
        key = record.primary_email.lower()
        with self._lock:
            if key in self._user_by_email:
                raise AlreadyExists(record.primary_email)
            self._users[record.id] = copy.deepcopy(record)
            self._user_by_email[key] = record.id
            return copy.deepcopy(record)

    def get_user(self, user_key: str) -> UserRecord:
        with self._lock:
            return copy.deepcopy(self._find_user(user_key))

    def delete_user(self, user_key: str) -> None:
        with self._lock:
            record = self._find_user(user_key)
            del self._users[record.id]
            self._user_by_email.pop(record.primary_email.lower(), None)

    def _find_user(self, user_key: str) -> UserRecord:
        user_id = self._user_by_email.get(user_key.lower(), user_key)
        record = self._users.get(user_id)
        if record is None:
            raise NotFound(user_key)
        return record

    # --- sinks and introspection ---------------------------------------------------

    def record_sink(self, name: str, delivery: SinkDelivery) -> int:
        with self._lock:
            self._sinks.setdefault(name, []).append(delivery)
            return self._sink_status.get(name, 200)

    def sink(self, name: str) -> list[SinkDelivery]:
        with self._lock:
            return list(self._sinks.get(name, []))

    def set_sink_status(self, name: str, status: int, delay_s: float | None = None) -> None:
        with self._lock:
            self._sink_status[name] = status
            if delay_s is not None:
                self._sink_delay_s[name] = delay_s

    def sink_delay_s(self, name: str) -> float:
        """How long the sink holds each request after recording it, before it answers."""
        with self._lock:
            return self._sink_delay_s.get(name, 0.0)

    def snapshot(
        self,
    ) -> tuple[list[PhoneNumberRecord], list[SenderRecord], list[UserRecord]]:
        with self._lock:
            return (
                copy.deepcopy(list(self._numbers.values())),
                copy.deepcopy(list(self._senders.values())),
                copy.deepcopy(list(self._users.values())),
            )

    def number_tags(self) -> dict[str, str | None]:
        """PN sid -> tag, for rendering sender tags in bulk."""
        with self._lock:
            return {sid: r.tag for sid, r in self._numbers.items()}
