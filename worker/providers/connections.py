"""Email provider clients for accounts' own workspaces (provider connections), and for the
platform's Google settings.

`ConnectionClients` keeps one client (and so one token source, one token cache, one
connection pool) per connection version in a worker process, least recently used out first;
`verify` is what `PUT /v0/providers/...` runs: a token is obtained, and for Microsoft the
licence SKU is looked up, or the field at fault is named.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.providers.errors import AUTH_FAILED, INVALID_REQUEST, Permanent
from worker.providers.google_auth import ServiceAccountTokenSource
from worker.providers.google_directory import GoogleDirectory, TokenSource
from worker.providers.http import ProviderClient, timeout_from_settings
from worker.providers.microsoft_auth import MsalTokenSource
from worker.providers.microsoft_graph import MicrosoftGraph
from worker.settings import Settings

GOOGLE = "google"
MICROSOFT = "microsoft"


@dataclass(frozen=True)
class Connection:
    """What a worker needs of an account's connection. `version` changes whenever its
    credentials do, so a cached client of older credentials is never used again."""

    id: int
    version: str
    provider: str
    domain: str
    config: Mapping[str, Any] = field(default_factory=dict)  # not secret (tenant, SKU, ...)
    secrets: Mapping[str, Any] = field(default_factory=dict, repr=False)


class CredentialsRefused(Permanent):
    """The provider refused a connection's credentials; `field` is the body field at fault."""

    def __init__(self, provider: str, field: str, message: str) -> None:
        super().__init__(provider, AUTH_FAILED, message, 400)
        self.field = field


def token_source(settings: Settings, connection: Connection) -> TokenSource:
    timeout = timeout_from_settings(settings)
    if connection.provider == GOOGLE:
        return ServiceAccountTokenSource(
            connection.secrets["service_account"],
            str(connection.config["admin_subject"]),
            token_url=settings.google_token_url,
            timeout=timeout,
        )
    if connection.provider == MICROSOFT:
        return MsalTokenSource(
            tenant_id=str(connection.config["tenant_id"]),
            client_id=str(connection.config["client_id"]),
            client_secret=str(connection.secrets["client_secret"]),
            login_url=settings.microsoft_login_url,
            timeout=timeout,
        )
    raise Permanent(connection.provider, INVALID_REQUEST, "unknown provider")


def build_client(settings: Settings, connection: Connection) -> GoogleDirectory | MicrosoftGraph:
    source = token_source(settings, connection)
    client: GoogleDirectory | MicrosoftGraph
    if connection.provider == GOOGLE:
        client = GoogleDirectory(
            base_url=settings.google_directory_url,
            token_source=source,
            timeout=timeout_from_settings(settings),
            max_connections=20,
        )
    else:
        client = MicrosoftGraph(
            base_url=settings.microsoft_graph_url,
            token_source=source,
            timeout=timeout_from_settings(settings),
        )
    # The customer's own workspace or tenant: its quota is its own, not the platform's (and
    # two accounts connecting the same tenant share it, as Microsoft counts per tenant).
    tenant = connection.config.get("tenant_id") if connection.provider == MICROSOFT else None
    client.connection = f"{connection.provider}:{tenant or connection.domain}"
    return client


def verify(settings: Settings, connection: Connection) -> dict[str, Any]:
    """Check the credentials against the provider: obtain a token, and for Microsoft find
    the licence SKU. What it learnt (the SKU's id) is returned; a refusal raises
    `CredentialsRefused` naming the field; a provider outage raises `Retryable`."""
    client = build_client(settings, connection)
    try:
        if connection.provider == GOOGLE:
            try:
                client.token_source.token()
            except Permanent as exc:
                # A key Google does not know (signature, JWT) is the key's fault; a subject
                # outside the delegation, or no delegation for the scope, the subject's.
                key_fault = exc.code == INVALID_REQUEST or any(
                    word in exc.message for word in ("Signature", "JWT", "invalid_client")
                )
                field = "service_account" if key_fault else "admin_subject"
                raise CredentialsRefused(GOOGLE, field, exc.message) from exc
            return {}
        assert isinstance(client, MicrosoftGraph)
        try:
            client.token_source.token()
        except Permanent as exc:
            field = "tenant_id" if "tenant" in exc.message.lower() else "client_secret"
            if exc.provider_code in ("700016", "unauthorized_client"):
                field = "client_id"
            raise CredentialsRefused(MICROSOFT, field, exc.message) from exc
        try:
            sku = client.resolve_sku(str(connection.config["license_sku"]))
        except Permanent as exc:
            raise CredentialsRefused(
                MICROSOFT, "license_sku", f"cannot read the tenant's licences: {exc.message}"
            ) from exc
        if sku is None:
            raise CredentialsRefused(
                MICROSOFT, "license_sku", "the tenant has no subscription with that SKU"
            )
        return {"license_sku_id": sku.sku_id, "license_sku_part_number": sku.part_number}
    finally:
        _close(client)


class ConnectionClients:
    """Clients per connection version for one worker process (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_new_client: Callable[[ProviderClient], None] | None = None,
        build: Callable[[Settings, Connection], GoogleDirectory | MicrosoftGraph] = build_client,
    ) -> None:
        self.settings = settings
        self._on_new_client = on_new_client
        self._build = build
        self._lock = threading.Lock()
        self._clients: OrderedDict[tuple[int, str], GoogleDirectory | MicrosoftGraph] = (
            OrderedDict()
        )

    def client(self, connection: Connection) -> GoogleDirectory | MicrosoftGraph:
        key = (connection.id, connection.version)
        with self._lock:
            found = self._clients.get(key)
            if found is not None:
                self._clients.move_to_end(key)
                return found
            client = self._build(self.settings, connection)
            if self._on_new_client is not None:
                self._on_new_client(client)
            self._clients[key] = client
            # Older versions of this connection are never asked for again.
            stale = [k for k in self._clients if k[0] == connection.id and k != key]
            while len(self._clients) > max(1, self.settings.connection_cache_size):
                stale.append(next(iter(self._clients)))
            for old in dict.fromkeys(stale):
                _close(self._clients.pop(old))
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                _close(client)
            self._clients.clear()


def _close(client: GoogleDirectory | MicrosoftGraph) -> None:
    client.close()
    closer = getattr(client.token_source, "close", None)
    if closer is not None:
        closer()
