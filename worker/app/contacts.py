"""Application services: the operations the API and the CLI perform, over the store.

Routes stay thin: they authenticate, hand the raw request here, and shape the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
import structlog
from sqlalchemy.exc import IntegrityError

from worker import tracing
from worker.app.connections import ConnectionService
from worker.app.regulatory import RegulatoryService
from worker.domain import idempotency as idem
from worker.domain.batch import Item
from worker.domain.contacts import ContactStatus, ContactType, FirstRun
from worker.domain.errors import (
    AddressInUse,
    ContactExists,
    DomainError,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
)
from worker.domain.ids import is_id
from worker.domain.money import format_amount
from worker.domain.pricing import cost_cents
from worker.domain.regulatory import LOCAL
from worker.domain.validation import ContactRequest, is_brought, validate_contact_request
from worker.domain.views import contact_view
from worker.domain.whatsapp_pool import SenderMode, choose_mode
from worker.settings import Settings
from worker.store import accounts, contacts, credits
from worker.store import connections as connection_store
from worker.store import idempotency as idem_store
from worker.store import pipeline as pipeline_store
from worker.store import pool as pool_store
from worker.store.db import Database
from worker.store.models import Contact

log = structlog.get_logger(__name__)

MAX_ID = 2**63 - 1
Acceptance = contacts.Acceptance  # what `accept_prepared` tells of each contact
LIST_LIMIT_MAX = 1000


class Publisher(Protocol):
    def provision(self, contact_id: str, *, queue: str) -> None: ...


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Prepared:
    """A contact built for acceptance, with the reply that accepting it gives."""

    contact: Contact
    reply: Reply
    completion: tuple[str, idem_store.StoredResponse] | None
    brought: bool
    address: str | None
    cost: int
    # The request's trace context (worker.tracing.carrier), for a publish made from a batch
    # of several requests; None when tracing is off.
    trace: dict[str, str] | None = field(default_factory=tracing.carrier)


def _prices(settings: Settings) -> dict[ContactType, Any]:
    return {
        ContactType.PHONE: settings.setup_cost_phone,
        ContactType.EMAIL: settings.setup_cost_email,
        ContactType.WHATSAPP: settings.setup_cost_whatsapp,
    }


def monthly_prices(settings: Settings) -> dict[ContactType, Any]:
    return {
        ContactType.PHONE: settings.monthly_cost_phone,
        ContactType.EMAIL: settings.monthly_cost_email,
        ContactType.WHATSAPP: settings.monthly_cost_whatsapp,
    }


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise InvalidRequest("a JSON body is required", {"body": "is required"})
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON", {"body": "is not valid JSON"}) from None


class ContactService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        publisher: Publisher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        connections: ConnectionService | None = None,
        regulatory: RegulatoryService | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.publisher = publisher
        self.clock = clock
        self.connections = connections or ConnectionService(db, settings, clock=clock)
        self.regulatory = regulatory or RegulatoryService(db, settings, clock=clock)
        self.prices = _prices(settings)
        self.monthly = monthly_prices(settings)
        # PostgreSQL: concurrent acceptances of one account commit together (group commit),
        # and their tasks are published together right after.
        self.acceptor = (
            None
            if db.is_sqlite
            else contacts.GroupAcceptor(db.autocommit, after_commit=self.publish)
        )

    # --- reads -------------------------------------------------------------------------------

    def get(self, account_id: int, assistant_id: int, contact_id: str) -> dict[str, Any]:
        if not is_id("ct", contact_id):
            raise NotFound(f"no contact with that id for assistant {assistant_id}")
        with self.db.read() as session:
            contact = None
            if 0 < assistant_id <= MAX_ID:
                contact = contacts.get_contact(session, account_id, contact_id, assistant_id)
            if contact is None:
                raise NotFound(f"no contact {contact_id} for assistant {assistant_id}")
            steps = contacts.steps_for(session, [contact.id])[contact.id]
            return contact_view(contact, steps)

    def list(
        self, account_id: int, assistant_id: int, limit: int, starting_after: str | None
    ) -> list[dict[str, Any]]:
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidRequest(
                "limit out of range", {"limit": f"must be between 1 and {LIST_LIMIT_MAX}"}
            )
        if starting_after is not None and not is_id("ct", starting_after):
            raise InvalidRequest(
                "starting_after is not a contact id", {"starting_after": "must be a contact id"}
            )
        with self.db.read() as session:
            self._require_assistant(session, account_id, assistant_id)
            rows = contacts.list_contacts(session, account_id, assistant_id, limit, starting_after)
            steps = contacts.steps_for(session, [c.id for c in rows])
            return [contact_view(c, steps[c.id]) for c in rows]

    def credits(self, account_id: int) -> dict[str, str]:
        with self.db.read() as session:
            b = credits.balance(session, account_id)
        return {
            "balance": format_amount(b.balance_cents),
            "reserved": format_amount(b.reserved_cents),
            "available": format_amount(b.available_cents),
        }

    # --- the enqueue ---------------------------------------------------------------------------

    def submit(
        self,
        account_id: int,
        assistant_id: int,
        raw_body: bytes,
        *,
        path: str,
        idempotency_key: str | None = None,
    ) -> Reply:
        """Accept a contact request: record it pending with its cost reserved, then publish.

        Returns the reply to send; raises a DomainError for a refusal.
        """
        return self.idempotent(
            account_id,
            idempotency_key,
            path,
            raw_body,
            lambda key: self._submit(account_id, assistant_id, raw_body, path, idempotency_key=key),
        )

    def idempotent(
        self,
        account_id: int,
        idempotency_key: str | None,
        path: str,
        raw_body: bytes,
        run: Callable[[str | None], Reply],
    ) -> Reply:
        """Run a POST under its optional Idempotency-Key: replay a finished first request,
        refuse a reused or in-flight key, else `run(key)`, which stores its reply with the key
        in the transaction that accepts."""
        if idempotency_key is None:
            return run(None)
        key = idem.check_key(idempotency_key)
        now = self.clock()
        with self.db.write() as session:
            stored = idem_store.claim(
                session,
                account_id,
                key,
                idem.fingerprint("POST", path, raw_body),
                now,
                timedelta(seconds=self.settings.idempotency_ttl_s),
                timedelta(seconds=self.settings.idempotency_lock_s),
            )
        if stored is not None:
            headers = {**stored.headers, "Idempotent-Replayed": "true"}
            return Reply(stored.status, stored.body, headers)
        try:
            return run(key)
        except BaseException:
            # Only an accepted request is remembered; a refused one frees its key (as Stripe
            # does for requests that fail validation), so the client can fix it and retry.
            with self.db.write() as session:
                idem_store.release(session, account_id, key)
            raise

    def _submit(
        self,
        account_id: int,
        assistant_id: int,
        raw_body: bytes,
        path: str,
        idempotency_key: str | None = None,
    ) -> Reply:
        if not 0 < assistant_id <= MAX_ID:
            raise NotFound(f"no assistant {assistant_id}")
        try:
            request = validate_contact_request(parse_json(raw_body))
            request, connection_id, address = self.route(account_id, request)
        except DomainError:
            # An unknown assistant outranks a bad body (404 before 422). The ownership check
            # of an accepted request is part of the statement that accepts it, below.
            with self.db.read() as session:
                self._require_assistant(session, account_id, assistant_id)
            raise
        prepared = self._prepare(
            account_id, assistant_id, request, path, connection_id, address, idempotency_key
        )
        outcome: contacts.Acceptance | BaseException
        try:
            if prepared.brought:
                outcome = self._accept_brought(prepared.contact, prepared.completion)
            else:
                outcome = self._accept(prepared.contact, prepared.completion)
        except IntegrityError as exc:
            outcome = exc
        reply = self.settle(prepared, outcome)
        if not prepared.brought and self.acceptor is None:
            # else published by the acceptor, with its batch; a brought address is active
            # already: nothing for a worker to do
            self.publish([prepared.contact])
        return reply

    def prepare(
        self, account_id: int, assistant_id: int, raw_body: bytes, path: str
    ) -> Prepared | None:
        """The contact a plain request (a valid phone or WhatsApp body, no Idempotency-Key)
        would record, built without the database; None for any other request, which
        `submit` handles whole. Accept it with `accept_prepared`, answer with `settle`."""
        if not 0 < assistant_id <= MAX_ID:
            return None
        try:
            request = validate_contact_request(parse_json(raw_body))
        except DomainError:
            return None  # `submit` answers it, 404 before 422
        if request.contact_type is not ContactType.PHONE or is_brought(request.fields):
            return None  # routed through the database first (a WhatsApp sender: its mode)
        if not self._sold(request):
            return None  # `submit` refuses it
        if self._needs_documents(request):
            return None  # its regulatory documents are read from the database first
        return self._prepare(account_id, assistant_id, request, path, None, None, None)

    def accept_prepared(self, batch: list[Prepared]) -> list[contacts.Acceptance | BaseException]:
        """Accept prepared contacts of one account, together where the database can, and
        publish the accepted ones; each one's outcome, or the error it met. Never raises."""
        if self.db.is_sqlite:
            results: list[contacts.Acceptance | BaseException] = []
            for p in batch:
                try:
                    results.append(self._accept(p.contact, p.completion))
                except BaseException as exc:
                    results.append(exc)
        else:
            pending = [contacts.Pending(p.contact, p.completion) for p in batch]
            results = contacts.accept_batch(self.db.autocommit, pending)
        taken = [
            p
            for p, outcome in zip(batch, results, strict=True)
            if outcome is contacts.Acceptance.ACCEPTED
        ]
        if taken:
            traces = [p.trace for p in taken]
            self.publish([p.contact for p in taken], traces=traces if any(traces) else None)
        return results

    def settle(self, prepared: Prepared, outcome: contacts.Acceptance | BaseException) -> Reply:
        """The reply to an accepted contact, or the DomainError of a refused one (an error
        other than the live-contact index's is raised as it is)."""
        if outcome is contacts.Acceptance.ACCEPTED:
            return prepared.reply
        contact = prepared.contact
        if outcome is contacts.Acceptance.NO_ASSISTANT:
            raise NotFound(f"no assistant {contact.assistant_id}")
        if outcome is contacts.Acceptance.ADDRESS_IN_USE:
            raise AddressInUse(
                f"{prepared.address} is live on another contact",
                {"address": "is live on another contact"},
            )
        if isinstance(outcome, BaseException) and not isinstance(outcome, IntegrityError):
            raise outcome
        # A live contact of the type outranks a lack of credits (409 before 402).
        with self.db.read() as session:
            if contacts.live_contact_exists(session, contact.assistant_id, contact.contact_type):
                raise ContactExists(
                    f"assistant {contact.assistant_id} already has a live "
                    f"{contact.contact_type} contact"
                ) from None
        if isinstance(outcome, IntegrityError):
            raise outcome  # an IntegrityError that is not the live-contact index
        raise InsufficientCredits(
            f"available credits are below the setup cost of {format_amount(prepared.cost)}"
        )

    def _prepare(
        self,
        account_id: int,
        assistant_id: int,
        request: ContactRequest,
        path: str,
        connection_id: int | None,
        address: str | None,
        idempotency_key: str | None,
    ) -> Prepared:
        brought = is_brought(request.fields)
        # An address the customer brings costs nothing: no setup cost and no monthly fee.
        cost = 0 if brought else cost_cents(request.contact_type, self.prices)
        monthly = 0 if brought else cost_cents(request.contact_type, self.monthly)
        contact = contacts.pending_contact(
            account_id, assistant_id, request, cost, self.clock(), monthly
        )
        contact.connection_id = connection_id
        if brought:
            contact.status = ContactStatus.ACTIVE.value
            contact.address = address
        reply = Reply(
            202, {"info": contact_view(contact, [])}, {"Location": f"{path}/{contact.id}"}
        )
        completion = None
        if idempotency_key is not None:
            completion = (
                idempotency_key,
                idem_store.StoredResponse(reply.status, reply.body, reply.headers),
            )
        return Prepared(contact, reply, completion, brought, address, cost)

    def route(
        self, account_id: int, request: ContactRequest, *, dedicated_planned: int = 0
    ) -> tuple[ContactRequest, int | None, str | None]:
        """The request with its email provider (or WhatsApp sender) resolved, the connection
        it goes through (None: the platform's settings) and its address when known now (an
        address brought by the customer). An email address already live on a contact is
        refused here. `dedicated_planned`: dedicated WhatsApp senders that requests routed
        with this one (a batch's) will take beyond the live ones."""
        if is_brought(request.fields):
            return request, None, request.fields["address"]
        if not self._sold(request):
            self.regulatory.require_sold(
                str(request.fields["phone_country"]),
                str(request.fields.get("phone_number_type") or LOCAL),
                "phone_number_type",
                "phone_country",
            )
        if request.contact_type is ContactType.WHATSAPP:
            request = self._with_sender(account_id, request, dedicated_planned)
        if request.contact_type is not ContactType.EMAIL:
            return self._with_documents(account_id, request), None, None
        route = self.connections.route_email(account_id, request.fields.get("email_provider"))
        address = f"{request.fields['email_local']}@{route.domain}"
        with self.db.read() as session:
            if contacts.address_live(session, address):
                raise AddressInUse(
                    f"{address} is live on another contact",
                    {"email_local": f"{address} is live on another contact"},
                )
        fields = {**request.fields, "email_provider": route.provider}
        return ContactRequest(request.contact_type, fields), route.connection_id, None

    def _sold(self, request: ContactRequest) -> bool:
        """Whether Twilio sells the number a phone request asks for in its country (judged
        in memory: its cached answer, else the built-in table)."""
        country = request.fields.get("phone_country")
        if request.contact_type is not ContactType.PHONE or not country:
            return True
        kind = str(request.fields.get("phone_number_type") or LOCAL)
        return self.regulatory.rules.sells(str(country), kind)

    def _needs_documents(self, request: ContactRequest) -> bool:
        """Whether a number request's country and type need regulatory documents (judged in
        memory: no database query)."""
        country = request.fields.get("phone_country")
        if request.contact_type is ContactType.EMAIL or not country:
            return False
        kind = str(request.fields.get("phone_number_type") or LOCAL)
        return self.regulatory.needs_documents(str(country), kind)

    def _with_sender(
        self, account_id: int, request: ContactRequest, dedicated_planned: int
    ) -> ContactRequest:
        """A WhatsApp request with its sender decided (`whatsapp_sender`): the one it asked
        for, else dedicated while the account's own WABA has room, else the shared pool
        (worker/domain/whatsapp_pool.choose_mode)."""
        requested = request.fields.get("whatsapp_sender")
        if requested is None:
            with self.db.read() as session:
                own = connection_store.get(session, account_id, "whatsapp") is not None
                live = pool_store.dedicated_live(session, account_id) if own else 0
            requested = choose_mode(
                None,
                own_waba=own,
                dedicated_live=live + dedicated_planned,
                own_waba_max=self.settings.whatsapp_own_waba_max_senders,
            ).value
        return ContactRequest(
            request.contact_type, {**request.fields, "whatsapp_sender": requested}
        )

    def _with_documents(self, account_id: int, request: ContactRequest) -> ContactRequest:
        """A number request with the regulatory documents its country and type need (the
        account's or the platform's), recorded in its request for the worker's purchase;
        refused (422 naming `phone_country`) before anything is reserved when it lacks one."""
        if not self._needs_documents(request):
            return request
        country = str(request.fields["phone_country"])
        kind = str(request.fields.get("phone_number_type") or LOCAL)
        docs = self.regulatory.documents(account_id, country, kind)
        if docs is None:
            return request
        fields = {
            **request.fields,
            "documents": docs["source"],
            "bundle_sid": docs["bundle_sid"],
            "address_sid": docs["address_sid"],
            "address_country": docs["address_country"],
        }
        return ContactRequest(request.contact_type, fields)

    def route_items(
        self, account_id: int, items: list[Item]
    ) -> tuple[list[Item], dict[int, int | None]]:
        """`route` for a batch's items: routed items, refused ones as errors, and the
        connection of each routed index. Brought addresses go through the single route."""
        routed: list[Item] = []
        connections: dict[int, int | None] = {}
        dedicated = 0  # this batch's dedicated WhatsApp senders so far
        for item in items:
            if item.request is None:
                routed.append(item)
                continue
            try:
                if is_brought(item.request.fields):
                    raise InvalidRequest(
                        "an existing address is recorded through the single route",
                        {"provisioned_by": "user is not taken in batches"},
                    )
                request, connection_id, _ = self.route(
                    account_id, item.request, dedicated_planned=dedicated
                )
            except DomainError as exc:
                routed.append(Item(item.index, item.assistant_id, error=exc))
                continue
            if request.fields.get("whatsapp_sender") == SenderMode.DEDICATED.value:
                dedicated += 1
            routed.append(Item(item.index, item.assistant_id, request))
            connections[item.index] = connection_id
        return routed, connections

    def _accept_brought(
        self, contact: Contact, completion: tuple[str, idem_store.StoredResponse] | None
    ) -> contacts.Acceptance:
        now = self.clock()
        with self.db.write() as session:
            return contacts.accept_brought(
                session,
                contact,
                completion,
                lambda s, c: pipeline_store.record_event(s, c, now),
            )

    def publish(
        self,
        accepted: list[Contact],
        queue: str = "interactive",
        priorities: list[int] | None = None,
        traces: list[dict[str, str] | None] | None = None,
    ) -> None:
        """Send the provisioning tasks of committed contacts; never raises.

        Only after the commit: a worker must never run before the row exists. If the publish
        fails, the contacts stay pending and the reconciler enqueues them later.
        `priorities`: each message's broker priority (a batch's positions), else none.
        `traces`: each contact's request's trace context, when they came from several requests.
        """
        ids = [contact.id for contact in accepted]
        provision_many = getattr(self.publisher, "provision_many", None)
        batches = [ids] if provision_many is not None else [[i] for i in ids]
        for batch in batches:
            try:
                if provision_many is not None:
                    first_runs = [_first_run(contact) for contact in accepted]
                    extra: dict[str, Any] = {}
                    if priorities is not None:
                        extra["priorities"] = priorities
                    if traces is not None:
                        extra["traces"] = traces
                    provision_many(batch, queue=queue, first_runs=first_runs, **extra)
                else:
                    self.publisher.provision(batch[0], queue=queue)
            except Exception as exc:
                for contact_id in batch:
                    log.warning("publish_failed", contact_id=contact_id, error=type(exc).__name__)

    def _accept(
        self, contact: Contact, completion: tuple[str, idem_store.StoredResponse] | None
    ) -> contacts.Acceptance:
        """Record the contact with its cost reserved, committed before this returns."""
        if self.acceptor is None:
            with self.db.write() as session:
                return contacts.accept(session, contact, completion)
        return self.acceptor.accept(contact, completion)

    def _require_assistant(self, session: Any, account_id: int, assistant_id: int) -> None:
        if not (0 < assistant_id <= MAX_ID) or not accounts.assistant_owned(
            session, account_id, assistant_id
        ):
            raise NotFound(f"no assistant {assistant_id}")


__all__ = ["Acceptance", "ContactService", "DomainError", "Prepared", "Publisher", "Reply"]


def _first_run(contact: Contact) -> FirstRun | None:
    """The task message's hint for a contact just accepted (see `FirstRun`)."""
    return FirstRun.of(contact.contact_type, contact.request, bulk=contact.batch_id is not None)
