"""Which email client and domain a contact's steps use: its account's provider connection
(credentials unsealed here, in the worker, and never logged), or the platform's Google."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.domain.connections import WHATSAPP
from worker.providers import AUTH_FAILED, GoogleDirectory, Permanent, Providers
from worker.providers.connections import Connection, ConnectionClients
from worker.providers.http import ProviderClient
from worker.providers.microsoft_graph import MicrosoftGraph
from worker.secrets import SecretBox, SecretsUnreadable
from worker.settings import Settings
from worker.store import connections as store
from worker.store.db import Database
from worker.store.models import Contact


@dataclass(frozen=True)
class EmailTarget:
    provider: str  # google | microsoft
    domain: str
    client: GoogleDirectory | MicrosoftGraph
    config: Mapping[str, Any] = field(default_factory=dict)  # tenant, licence SKU, ...


class EmailTargets:
    """Resolves a contact to its email target; one client per connection version is kept
    for the life of the worker process (its token is cached and refreshed there)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        providers: Providers,
        *,
        on_new_client: Callable[[ProviderClient], None] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.providers = providers
        self.clients = ConnectionClients(settings, on_new_client=on_new_client)
        self._box: SecretBox | None = None

    def for_contact(self, contact: Contact) -> EmailTarget:
        if contact.connection_id is None:
            return EmailTarget("google", self.settings.email_domain, self.providers.directory)
        provider = str((contact.request or {}).get("email_provider") or "google")
        with self.db.read() as session:
            row = store.by_id(session, contact.connection_id)
            if row is None:
                raise Permanent(provider, AUTH_FAILED, "the account's connection was removed")
            version, domain, config = row.version, row.domain, dict(row.config)
            provider, sealed = row.provider, row.secrets_sealed
        if self._box is None:
            self._box = SecretBox.from_settings(self.settings)
        try:
            secrets = self._box.open(sealed)
        except SecretsUnreadable as exc:
            raise Permanent(provider, AUTH_FAILED, f"connection credentials: {exc}") from exc
        connection = Connection(contact.connection_id, version, provider, domain, config, secrets)
        return EmailTarget(provider, domain, self.clients.client(connection), config)

    def whatsapp_waba(self, account_id: int) -> str | None:
        """The account's own WABA (`PUT /v0/providers/whatsapp`), if it set one."""
        with self.db.read() as session:
            row = store.get(session, account_id, WHATSAPP)
            waba = row.config.get("waba_id") if row is not None else None
        return str(waba) if waba else None

    def close(self) -> None:
        self.clients.close()
