"""Webhook delivery: the guarded HTTP sender, the delivery of one event, and the account's
endpoint operations for the API and the CLI.

No Celery and no FastAPI here: the tasks (worker/tasks.py) and routes (api_stub/webhooks.py)
are thin adapters over `Deliverer` and `WebhookService`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog
from sqlalchemy.exc import IntegrityError

from worker.domain.errors import InvalidRequest, NotFound
from worker.domain.ids import is_id
from worker.domain.webhooks import (
    RESPONSE_EXCERPT_BYTES,
    DeliveryStatus,
    IPAddress,
    Outcome,
    RefusedTarget,
    check_addresses,
    classify_status,
    new_secret,
    parse_target,
    signed_headers,
)
from worker.metrics import webhook_attempt
from worker.settings import Settings
from worker.store import webhooks as store
from worker.store.db import Database
from worker.store.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from worker.views import iso

log = structlog.get_logger(__name__)

Resolver = Callable[[str, int], list[IPAddress]]
USER_AGENT = "contact-provisioner-webhooks/0.1"
# A retry due within this many seconds goes back to the broker as a countdown; a longer wait
# stays in the database until the relay finds it due (a Redis countdown longer than the
# visibility timeout would be delivered twice).
COUNTDOWN_MAX_S = 60.0
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


def lease_s(settings: Settings) -> float:
    """How long a sender holds a delivery: longer than one attempt can take (connect, write,
    read of the answer's head and first KiB, each bounded by the timeout)."""
    return 3 * settings.webhook_timeout_s + 5


class WebhookSender:
    """POSTs one signed delivery to a URL that is checked again at every attempt.

    The host is resolved here, every address checked, and the connection made to the checked
    address (the name goes in `Host` and, for https, in SNI and certificate checks), so a
    name that resolves differently a moment later (DNS rebinding) is never connected to.
    Redirects are not followed; the answer is read up to its first KiB.
    """

    def __init__(self, settings: Settings, resolve: Resolver = system_resolve) -> None:
        self.allow_private = settings.webhook_allow_private
        self.resolve = resolve
        self.client = httpx.Client(
            timeout=httpx.Timeout(settings.webhook_timeout_s),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: we connect where we checked
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    def send(self, url: str, headers: dict[str, str], body: bytes) -> store.AttemptResult:
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            target = parse_target(url)
            addresses = (
                [target.ip] if target.ip is not None else self.resolve(target.host, target.port)
            )
            check_addresses(addresses, allow_private=self.allow_private)
        except RefusedTarget as exc:
            return store.AttemptResult(Outcome.REFUSED_ADDRESS, elapsed_ms(), error=exc.reason)
        except (OSError, UnicodeError) as exc:  # the name does not resolve
            return store.AttemptResult(
                Outcome.CONNECTION_ERROR, elapsed_ms(), error=f"dns: {exc}"[:200]
            )
        response = None
        failure: httpx.HTTPError | None = None
        # Each address was checked; the next is tried only if one refuses the connection.
        for address in addresses[:3]:
            request = self.client.build_request(
                "POST",
                httpx.URL(
                    scheme=target.scheme,
                    host=str(address),
                    port=target.port,
                    raw_path=target.path.encode("ascii"),
                ),
                headers={
                    **headers,
                    "host": target.host_header,
                    "content-type": "application/json",
                    "user-agent": USER_AGENT,
                    "accept-encoding": "identity",  # the excerpt is raw bytes, never inflated
                },
                content=body,
                extensions={"sni_hostname": target.host} if target.ip is None else {},
            )
            try:
                response = self.client.send(request, stream=True)
                break
            except httpx.ConnectError as exc:
                failure = exc
            except httpx.TimeoutException as exc:
                return store.AttemptResult(Outcome.TIMEOUT, elapsed_ms(), error=type(exc).__name__)
            except httpx.HTTPError as exc:
                failure = exc
                break
        if response is None:
            return store.AttemptResult(
                Outcome.CONNECTION_ERROR,
                elapsed_ms(),
                error=f"{type(failure).__name__}: {failure}"[:200],
            )
        excerpt = bytearray()
        error = None
        try:
            for chunk in response.iter_raw():
                excerpt += chunk
                if len(excerpt) >= RESPONSE_EXCERPT_BYTES:
                    break
        except httpx.HTTPError as exc:  # the status is known; a broken body does not change it
            error = type(exc).__name__
        finally:
            response.close()
        return store.AttemptResult(
            classify_status(response.status_code),
            elapsed_ms(),
            status_code=response.status_code,
            response=bytes(excerpt[:RESPONSE_EXCERPT_BYTES]).decode("utf-8", errors="replace"),
            error=error,
        )

    def close(self) -> None:
        self.client.close()


class Deliverer:
    """Sends one event's delivery once per call, under a claim; the relay's queries."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        sender: WebhookSender,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.sender = sender
        self.clock = clock
        self.schedule = settings.webhook_retry_schedule

    def deliver(self, event_id: str, owner: str) -> float | None:
        """One attempt if one is due; the countdown after which to call again, if any."""
        now = self.clock()
        with self.db.write() as session:
            if not store.ensure_delivery(session, event_id, now):
                return None
            claimed = store.claim(
                session, event_id, owner, now, lease_s(self.settings), self.schedule
            )
        if claimed is None:
            return None
        body = orjson.dumps(claimed.payload).decode("utf-8")
        headers = signed_headers(claimed.event_id, self.clock(), body, claimed.secrets)
        result = self.sender.send(claimed.url, headers, body.encode("utf-8"))
        with self.db.write() as session:
            status, countdown = store.record_attempt(
                session,
                claimed,
                owner,
                result,
                self.clock(),
                self.schedule,
                COUNTDOWN_MAX_S,
                self.settings.webhook_relay_grace_s,
            )
        log.info(
            "webhook_attempt",
            event_id=event_id,
            delivery_id=claimed.delivery_id,
            attempt=claimed.attempt,
            outcome=result.outcome.value,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            delivery_status=status.value,
        )
        webhook_attempt(result.outcome.value)
        return countdown

    def relay(self, limit: int = 500) -> list[str]:
        """Event ids whose delivery task should be published now."""
        with self.db.write() as session:
            return store.due_for_relay(
                session, self.clock(), self.settings.webhook_relay_grace_s, limit
            )


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
        self, *, failed_only: bool, since: datetime | None, account_id: int | None = None
    ) -> list[str]:
        with self.db.write() as session:
            return store.redrive(
                session,
                self.clock(),
                failed_only=failed_only,
                since=since,
                grace_s=self.settings.webhook_relay_grace_s,
                account_id=account_id,
            )


__all__ = [
    "Deliverer",
    "DeliveryStatus",
    "WebhookSender",
    "WebhookService",
    "system_resolve",
]
