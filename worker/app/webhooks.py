"""An account's webhook endpoint and its deliveries, for the API and the CLI.

No Celery and no FastAPI here: the routes (api_stub/webhooks.py) and the `provisioner webhooks`
commands are thin adapters over `WebhookService`; the sending lives in worker/runtime/delivery.py.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from worker.domain.errors import InvalidRequest, NotFound
from worker.domain.ids import is_id
from worker.domain.views import iso
from worker.domain.webhooks import (
    DeliveryStatus,
    IPAddress,
    RefusedTarget,
    check_addresses,
    new_secret,
    parse_target,
)
from worker.settings import Settings
from worker.store import webhooks as store
from worker.store.db import Database
from worker.store.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = structlog.get_logger(__name__)

Resolver = Callable[[str, int], list[IPAddress]]
LIST_LIMIT_MAX = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order."""
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in found:
            found.append(ip)
    return found


# --- the account's endpoint ----------------------------------------------------------------


def _attempt_view(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempted_at": iso(attempt.attempted_at),
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "response": attempt.response,
        "error": attempt.error,
    }


def delivery_view(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "contact_id": delivery.contact_id,
        "type": delivery.type,
        "status": delivery.status,
        "attempts": [_attempt_view(a) for a in attempts],
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.next_attempt_at else None,
        "created_at": iso(delivery.created_at),
        "updated_at": iso(delivery.updated_at),
    }


def endpoint_view(endpoint: WebhookEndpoint | None) -> dict[str, Any]:
    """The endpoint without its secrets: those are shown once, when made."""
    if endpoint is None:
        return {"set": False, "url": None, "enabled": False}
    expires = endpoint.previous_secret_expires_at
    return {
        "set": True,
        "url": endpoint.url,
        "enabled": endpoint.disabled_at is None,
        "disabled_at": iso(endpoint.disabled_at) if endpoint.disabled_at else None,
        "previous_secret_expires_at": iso(expires) if expires else None,
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
    }


class WebhookService:
    """Set, show, delete and rotate an account's endpoint; list its deliveries."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        resolve: Resolver = system_resolve,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.resolve = resolve
        self.clock = clock

    def check_url(self, url: object) -> str:
        """The URL if it may be called now, else `RefusedTarget` (a 422 naming `url`)."""
        target = parse_target(url)
        assert isinstance(url, str)
        if self.settings.webhook_allow_private:
            return url  # nothing left to refuse: every address is allowed
        if target.ip is not None:
            addresses = [target.ip]
        else:
            try:
                addresses = self.resolve(target.host, target.port)
            except (OSError, UnicodeError):
                raise RefusedTarget("unresolvable", "the host does not resolve") from None
        check_addresses(addresses, allow_private=False)
        return url

    def set(self, account_id: int, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object", {"body": "must be an object"})
        if "url" not in body:
            raise InvalidRequest("url is required", {"url": "is required"})
        url = self.check_url(body["url"])
        try:
            info, created = self._set(account_id, url)
        except IntegrityError:  # a concurrent first set made it: this one updates it
            info, created = self._set(account_id, url)
        log.info("webhook_endpoint_set", account_id=account_id, created=created)
        return info

    def _set(self, account_id: int, url: str) -> tuple[dict[str, Any], bool]:
        with self.db.write() as session:
            endpoint, created = store.set_endpoint(
                session, account_id, url, new_secret(), self.clock()
            )
            info = endpoint_view(endpoint)
            # The secret is shown when it is made (first set, rotation), as Stripe does.
            info["secret"] = endpoint.secret if created else None
        return info, created

    def get(self, account_id: int) -> dict[str, Any]:
        with self.db.read() as session:
            return endpoint_view(store.get_endpoint(session, account_id))

    def delete(self, account_id: int) -> dict[str, Any]:
        with self.db.write() as session:
            deleted = store.delete_endpoint(session, account_id)
        return {"deleted": deleted}

    def rotate(self, account_id: int) -> dict[str, Any]:
        with self.db.write() as session:
            grace_s = self.settings.webhook_secret_grace_s
            endpoint = store.rotate_secret(session, account_id, new_secret(), self.clock(), grace_s)
            if endpoint is None:
                raise NotFound("no webhook endpoint is set for this account")
            info = endpoint_view(endpoint)
            info["secret"] = endpoint.secret
        log.info("webhook_secret_rotated", account_id=account_id)
        return info

    def deliveries(
        self, account_id: int, contact_id: str | None, limit: int = 100
    ) -> list[dict[str, Any]]:
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidRequest(
                "limit out of range", {"limit": f"must be between 1 and {LIST_LIMIT_MAX}"}
            )
        if contact_id is not None and not is_id("ct", contact_id):
            return []  # no contact has that id; nothing to look up
        with self.db.read() as session:
            rows = store.list_deliveries(session, account_id, contact_id, limit)
            return [delivery_view(d, a) for d, a in rows]

    def redrive(
        self,
        *,
        failed_only: bool,
        since: datetime | None,
        account_id: int | None = None,
        event_id: str | None = None,
    ) -> list[str]:
        with self.db.write() as session:
            return store.redrive(
                session,
                self.clock(),
                failed_only=failed_only,
                since=since,
                grace_s=self.settings.webhook_relay_grace_s,
                account_id=account_id,
                event_id=event_id,
            )


__all__ = [
    "DeliveryStatus",
    "WebhookService",
    "system_resolve",
]
