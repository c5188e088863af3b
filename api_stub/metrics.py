"""`GET /metrics` and the middleware that gives each request an id and counts it.

`install(app, redis_client)` adds both; the metric families themselves live in worker.metrics.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.metrics import (
    HTTP_DURATION,
    HTTP_REQUESTS,
    BeatTickCollector,
    FiguresCollector,
    ProviderCredentialsCollector,
    QueueDepthCollector,
    Registries,
    StuckContactsCollector,
    status_class,
)
from worker.runtime.celery_app import QUEUES

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# A caller's id is kept when it is a plain token (it lands in every log line of the request);
# anything else is replaced by a fresh one.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContext:
    """Pure ASGI middleware: binds `request_id` for the request's log lines (and the tasks it
    publishes), returns it as `X-Request-ID`, counts the request by route template and status,
    and writes one log line per request (not for health and metrics)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500  # if the app raises before answering
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            template = self._template(scope)
            HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            HTTP_DURATION.labels(template, scope["method"], status_class(status)).observe(elapsed)
            if template not in _QUIET_ROUTES:
                log.info(
                    "http_request",
                    method=scope["method"],
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 1),
                )
            structlog.contextvars.reset_contextvars(**tokens)

    def _template(self, scope: Scope) -> str:
        """The matched route's path template; for an answer given before routing (a 413 from
        the body limit), the template the path would have matched; else `unmatched`."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        return getattr(route, "path", None) or "unmatched"


def install(
    app: FastAPI,
    redis_client: Any,
    stuck_counts: Callable[[], dict[str, int]] | None = None,
    figures: Callable[[], dict[str, float]] | None = None,
    credentials_ok: Callable[[], dict[str, bool]] | None = None,
) -> None:
    """Add `GET /metrics` (no authentication, like the health routes) and the middleware.
    Call it last in `create_app`, so the middleware is outermost and counts every answer.
    `stuck_counts` feeds `provisioner_contacts_stuck` and `figures` the oldest pending age,
    the webhook backlog and the live workers (both read from the database per scrape); beat's
    last tick is read from Redis; `credentials_ok` feeds `provisioner_provider_credentials_ok`
    (the providers' cached verdicts)."""
    collectors: list[Any] = [
        QueueDepthCollector(redis_client, QUEUES),
        BeatTickCollector(redis_client),
    ]
    if stuck_counts is not None:
        collectors.append(StuckContactsCollector(stuck_counts))
    if figures is not None:
        collectors.append(FiguresCollector(figures))
    if credentials_ok is not None:
        collectors.append(ProviderCredentialsCollector(credentials_ok))
    registry = Registries(*collectors)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus metrics, in the classic text exposition format",
                "content": {CONTENT_TYPE_PLAIN_0_0_4.split(";")[0]: {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        # The queue depth is read from Redis: off the event loop.
        body = await run_in_threadpool(generate_latest, registry)  # type: ignore[arg-type]
        # The classic text format's type, as prometheus_client's own server sends by default
        # (its CONTENT_TYPE_LATEST names version 1.0.0, which older scrapers do not know).
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_middleware(RequestContext, routes=app.router.routes)
