"""Webhook delivery: the guarded HTTP sender and the delivery of one event, for the tasks.

No Celery here: worker/runtime/tasks.py is a thin adapter over `Deliverer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import httpx
import orjson
import structlog

from worker.app.webhooks import Resolver, system_resolve, utcnow
from worker.domain.webhooks import (
    RESPONSE_EXCERPT_BYTES,
    Outcome,
    RefusedTarget,
    check_addresses,
    classify_status,
    parse_target,
    signed_headers,
)
from worker.metrics import webhook_attempt
from worker.settings import Settings
from worker.store import webhooks as store
from worker.store.db import Database

log = structlog.get_logger(__name__)

USER_AGENT = "contact-provisioner-webhooks/0.1"
# A retry due within this many seconds goes back to the broker as a countdown; a longer wait
# stays in the database until the relay finds it due (a Redis countdown longer than the
# visibility timeout would be delivered twice).
COUNTDOWN_MAX_S = 60.0


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
