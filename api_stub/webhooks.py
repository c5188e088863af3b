"""Routes of an account's webhook endpoint and its deliveries: thin, over worker.webhooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Query, Request

from api_stub.errors import error_schema
from api_stub.limits_mw import read_body
from worker.service import parse_json
from worker.settings import Settings
from worker.webhooks import WebhookService

Call = Callable[[Request, Callable[[int], Any]], Awaitable[Any]]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key (`unauthenticated`)"),
    422: error_schema("Invalid request (`invalid_request`, with `fields`)"),
    429: error_schema("Too many requests for this key (`rate_limited`)"),
}
PUT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: error_schema("Body over 64 KiB (`payload_too_large`)"),
}
ROTATE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: error_schema("No endpoint is set (`not_found`)"),
}
SET_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {
            "type": "string",
            "maxLength": 2048,
            "description": "http(s) URL; its host must resolve only to public addresses",
        }
    },
}


def install(app: FastAPI, *, call: Call, service: WebhookService, settings: Settings) -> None:
    """Add the `/v0/webhook` routes; `call` authenticates, rate-limits and runs the function
    in the thread pool with the account id."""

    @app.put(
        "/v0/webhook",
        tags=["webhooks"],
        responses=PUT_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SET_BODY_SCHEMA}},
            }
        },
    )
    async def set_webhook(request: Request) -> dict[str, Any]:
        """Set the endpoint's URL. The signing secret (`whsec_...`) is made and shown on the
        first set only; later sets change the URL and answer `"secret": null`."""
        raw = await read_body(request, settings.max_body_bytes)
        info = await call(request, lambda account_id: service.set(account_id, parse_json(raw)))
        return {"info": info}

    @app.get("/v0/webhook", tags=["webhooks"], responses=ERRORS)
    async def get_webhook(request: Request) -> dict[str, Any]:
        """The endpoint (never its secret)."""
        return {"info": await call(request, service.get)}

    @app.delete("/v0/webhook", tags=["webhooks"], responses=ERRORS)
    async def delete_webhook(request: Request) -> dict[str, Any]:
        """Remove the endpoint; later events are kept as `no_endpoint` deliveries."""
        return {"info": await call(request, service.delete)}

    @app.post("/v0/webhook/rotate-secret", tags=["webhooks"], responses=ROTATE_ERRORS)
    async def rotate_secret(request: Request) -> dict[str, Any]:
        """A new secret, shown once; the old one also signs until `previous_secret_expires_at`."""
        return {"info": await call(request, service.rotate)}

    @app.get("/v0/webhook/deliveries", tags=["webhooks"], responses=ERRORS)
    async def list_deliveries(
        request: Request,
        contact_id: str | None = Query(None, max_length=64),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        """Deliveries of this account's events, newest first, each with its attempts."""
        info = await call(
            request, lambda account_id: service.deliveries(account_id, contact_id, limit)
        )
        return {"info": info}
