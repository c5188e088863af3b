"""Routes of an account's webhook endpoint and its deliveries: thin, over worker.app.webhooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Query, Request

from api_stub import schemas
from api_stub.errors import AUTHENTICATED, JSONResponse, error_schema
from api_stub.limits_mw import read_body
from worker.app.contacts import parse_json
from worker.app.webhooks import WebhookService
from worker.settings import Settings

Call = Callable[[Request, Callable[[int], Any]], Awaitable[Any]]

ERRORS: dict[int | str, dict[str, Any]] = dict(AUTHENTICATED)
PUT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: error_schema("Body over 64 KiB (`payload_too_large`)"),
    422: error_schema(
        "Invalid body or a refused URL (`invalid_request`, with `fields` naming `url`)"
    ),
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
        responses={
            200: schemas.ok(
                schemas.WebhookEndpointSetResponse,
                "The endpoint; `secret` is shown on the first set only",
            ),
            **PUT_ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SET_BODY_SCHEMA}},
            }
        },
    )
    async def set_webhook(request: Request) -> JSONResponse:
        """Set the endpoint's URL. The signing secret (`whsec_...`) is made and shown on the
        first set only; later sets change the URL and answer `"secret": null`."""
        raw = await read_body(request, settings.max_body_bytes)
        info = await call(request, lambda account_id: service.set(account_id, parse_json(raw)))
        return JSONResponse({"info": info})

    @app.get(
        "/v0/webhook",
        tags=["webhooks"],
        responses={
            200: schemas.ok(
                schemas.WebhookEndpointResponse, "The endpoint, or `set: false` when none is"
            ),
            **ERRORS,
        },
    )
    async def get_webhook(request: Request) -> JSONResponse:
        """The endpoint (never its secret)."""
        return JSONResponse({"info": await call(request, service.get)})

    @app.delete(
        "/v0/webhook",
        tags=["webhooks"],
        responses={
            200: schemas.ok(schemas.WebhookDeletedResponse, "Whether an endpoint was removed"),
            **ERRORS,
        },
    )
    async def delete_webhook(request: Request) -> JSONResponse:
        """Remove the endpoint; later events are kept as `no_endpoint` deliveries."""
        return JSONResponse({"info": await call(request, service.delete)})

    @app.post(
        "/v0/webhook/rotate-secret",
        tags=["webhooks"],
        responses={
            200: schemas.ok(
                schemas.WebhookEndpointRotatedResponse, "The endpoint with its new secret"
            ),
            **ROTATE_ERRORS,
        },
    )
    async def rotate_secret(request: Request) -> JSONResponse:
        """A new secret, shown once; the old one also signs until `previous_secret_expires_at`."""
        return JSONResponse({"info": await call(request, service.rotate)})

    @app.get(
        "/v0/webhook/deliveries",
        tags=["webhooks"],
        responses={
            200: schemas.ok(schemas.DeliveryListResponse, "Deliveries, newest first"),
            **ERRORS,
            422: error_schema("Invalid `contact_id` or `limit` (`invalid_request`)"),
        },
    )
    async def list_deliveries(
        request: Request,
        contact_id: str | None = Query(None, max_length=64),
        limit: int = Query(100, ge=1, le=1000),
    ) -> JSONResponse:
        """Deliveries of this account's events, newest first, each with its attempts."""
        info = await call(
            request, lambda account_id: service.deliveries(account_id, contact_id, limit)
        )
        return JSONResponse({"info": info})
