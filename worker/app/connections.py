"""An account's provider connections (`/v0/providers/google|microsoft|whatsapp`): set one after
the provider accepted its credentials, show it without secrets, delete it while nothing uses
it; and which connection (or the platform's settings) an email request goes through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from worker.domain.connections import (
    GOOGLE,
    MICROSOFT,
    PROVIDERS,
    WHATSAPP,
    validate_connection,
    validate_waba,
)
from worker.domain.errors import (
    ConnectionInUse,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
)
from worker.domain.views import iso
from worker.providers import ProviderError, TwilioSenders
from worker.providers.connections import Connection, CredentialsRefused, verify
from worker.secrets import SecretBox
from worker.settings import Settings
from worker.store import connections as store
from worker.store.db import Database
from worker.store.models import ProviderConnection

log = structlog.get_logger(__name__)

Verifier = Callable[[Settings, Connection], dict[str, Any]]
WabaChecker = Callable[[Settings, str], dict[str, Any]]


def check_waba(settings: Settings, waba_id: str) -> dict[str, Any]:
    """What Twilio can tell of a WABA: the Senders API has no read of one, so the check lists
    our senders (the credentials must work) and counts those registered under it. A WABA that
    Twilio cannot use is refused (63101) when the first sender is registered under it."""
    client = TwilioSenders.from_settings(settings)
    try:
        return {"senders_on_waba": client.senders_on_waba(waba_id)}
    finally:
        client.close()


@dataclass(frozen=True)
class EmailRoute:
    """Where an email contact is made: `connection_id` None is the platform's Google."""

    provider: str
    connection_id: int | None
    domain: str


def view(row: ProviderConnection) -> dict[str, Any]:
    """A connection as the API shows it: never a secret."""
    config = dict(row.config)
    if row.provider == WHATSAPP:
        return {
            "provider": row.provider,
            "waba_id": config.get("waba_id"),
            "senders_on_waba": config.get("senders_on_waba"),
            "verified_at": iso(row.verified_at),
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
        }
    return {
        "provider": row.provider,
        "domain": row.domain,
        **config,
        "verified_at": iso(row.verified_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


class ConnectionService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        box: SecretBox | None = None,
        verifier: Verifier = verify,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        waba_checker: WabaChecker = check_waba,
    ) -> None:
        self.db = db
        self.settings = settings
        self._box = box
        self.verifier = verifier
        self.clock = clock
        self.waba_checker = waba_checker

    @property
    def box(self) -> SecretBox:
        if self._box is None:  # made on first use: the key file only when connections are
            self._box = SecretBox.from_settings(self.settings)
        return self._box

    def put(self, account_id: int, provider: str, body: Any) -> dict[str, Any]:
        if _provider(provider) == WHATSAPP:
            return self._put_whatsapp(account_id, body)
        request = validate_connection(provider, body)
        with self.db.read() as session:
            existing = store.get(session, account_id, request.provider)
            moved = existing is not None and existing.domain != request.domain
            if moved and existing is not None and store.in_use(session, existing.id):
                raise ConnectionInUse(
                    "live contacts were made in this connection's domain; delete them "
                    "before changing it",
                    {"domain": "cannot change while live contacts use this connection"},
                )
        candidate = Connection(
            id=0,
            version="verify",
            provider=request.provider,
            domain=request.domain,
            config=request.config,
            secrets=request.secrets,
        )
        try:
            learnt = self.verifier(self.settings, candidate)
        except CredentialsRefused as exc:
            log.info("connection_refused", provider=provider, field=exc.field)
            raise InvalidRequest(
                f"{provider} refused the credentials: {exc.message}", {exc.field: exc.message}
            ) from None
        except ProviderError as exc:
            raise ProviderUnavailable(
                f"{provider} could not be reached to check the credentials ({exc.code}); try again"
            ) from None
        sealed = self.box.seal(request.secrets)
        with self.db.write() as session:
            row = store.put(
                session,
                account_id,
                request.provider,
                request.domain,
                {**request.config, **learnt},
                sealed,
                self.clock(),
            )
            shown = view(row)
        log.info("connection_set", provider=provider, domain=request.domain)
        return shown

    def _put_whatsapp(self, account_id: int, body: Any) -> dict[str, Any]:
        """The account's own WABA, which its WhatsApp senders are registered under from now on
        (the platform's, `PROVISIONER_TWILIO_WABA_ID`, otherwise)."""
        waba_id = validate_waba(body)
        with self.db.read() as session:
            existing = store.get(session, account_id, WHATSAPP)
            old = str(existing.config.get("waba_id")) if existing is not None else None
            if (
                old is not None
                and old != waba_id
                and store.whatsapp_in_use(session, account_id, old)
            ):
                raise ConnectionInUse(
                    "live WhatsApp contacts use this WABA; delete them before changing it",
                    {"waba_id": "cannot change while live contacts use this WABA"},
                )
        try:
            learnt = self.waba_checker(self.settings, waba_id)
        except ProviderError as exc:
            raise ProviderUnavailable(
                f"twilio could not be reached to check the WABA ({exc.code}); try again"
            ) from None
        sealed = self.box.seal({})
        with self.db.write() as session:
            row = store.put(
                session,
                account_id,
                WHATSAPP,
                "",
                {"waba_id": waba_id, **learnt},
                sealed,
                self.clock(),
            )
            shown = view(row)
        log.info("connection_set", provider=WHATSAPP)
        return shown

    def get(self, account_id: int, provider: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = store.get(session, account_id, _provider(provider))
            if row is None:
                raise NotFound(f"no {provider} connection")
            return view(row)

    def delete(self, account_id: int, provider: str) -> None:
        with self.db.write() as session:
            row = store.get(session, account_id, _provider(provider))
            if row is None:
                raise NotFound(f"no {provider} connection")
            if row.provider == WHATSAPP:
                if store.whatsapp_in_use(session, account_id, str(row.config.get("waba_id"))):
                    raise ConnectionInUse("live WhatsApp contacts use this WABA; delete them first")
            elif store.in_use(session, row.id):
                raise ConnectionInUse(
                    f"live contacts use this {provider} connection; delete them first"
                )
            store.remove(session, row.id)

    def route_email(self, account_id: int, requested: str | None) -> EmailRoute:
        """The connection an email request goes through: the one `requested`, else the
        account's one connection, else the platform's Google settings."""
        with self.db.read() as session:
            rows = {
                row.provider: row
                for row in store.of_account(session, account_id)
                if row.provider in PROVIDERS
            }
        if requested is None and len(rows) > 1:
            raise InvalidRequest(
                "the account has a Google and a Microsoft connection: say which",
                {"email_provider": "is required: google or microsoft"},
            )
        provider = requested or next(iter(rows), GOOGLE)
        row = rows.get(provider)
        if row is not None:
            return EmailRoute(provider, row.id, row.domain)
        if provider == MICROSOFT:
            raise InvalidRequest(
                "the account has no Microsoft 365 connection (PUT /v0/providers/microsoft)",
                {"email_provider": "no microsoft connection is set"},
            )
        return EmailRoute(GOOGLE, None, self.settings.email_domain)


def _provider(name: str) -> str:
    if name not in (*PROVIDERS, WHATSAPP):
        raise NotFound(f"no provider {name!r}: google, microsoft or whatsapp")
    return name
