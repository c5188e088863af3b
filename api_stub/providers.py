"""Routes of an account's provider connections (`/v0/providers/google|microsoft|whatsapp`):
thin, over worker.app.connections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response

from api_stub import schemas
from api_stub.errors import AUTHENTICATED, RETRY_AFTER, JSONResponse, error_schema
from api_stub.limits_mw import read_body
from worker.app.connections import ConnectionService
from worker.app.contacts import parse_json
from worker.settings import Settings

Call = Callable[[Request, Callable[[int], Any]], Awaitable[Any]]


NOT_SET = error_schema("The account has no connection to this provider (`not_found`)")
PUT_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTHENTICATED,
    404: error_schema("Not `google`, `microsoft` or `whatsapp` (`not_found`)"),
    409: error_schema(
        "The domain (or WABA) changes while live contacts use it (`connection_in_use`)"
    ),
    413: error_schema("Body over 64 KiB (`payload_too_large`)"),
    422: error_schema(
        "Invalid body, or credentials the provider refused (`invalid_request`, with `fields` "
        "naming the field at fault)"
    ),
    503: error_schema(
        "The database, or the provider checking the credentials, is unavailable "
        "(`unavailable`, `provider_unavailable`); retry after `Retry-After`",
        {"Retry-After": RETRY_AFTER},
    ),
}
BODY_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "title": "google",
            "type": "object",
            "required": ["domain", "admin_subject", "service_account"],
            "properties": {
                "domain": {"type": "string", "description": "the Workspace domain of new users"},
                "admin_subject": {
                    "type": "string",
                    "description": "a Workspace admin the service account acts as",
                },
                "service_account": {
                    "type": "object",
                    "description": "the service account's JSON key, as downloaded",
                },
            },
        },
        {
            "title": "microsoft",
            "type": "object",
            "required": ["domain", "tenant_id", "client_id", "client_secret", "license_sku"],
            "properties": {
                "domain": {"type": "string", "description": "a verified domain of the tenant"},
                "tenant_id": {"type": "string", "description": "directory (tenant) id"},
                "client_id": {"type": "string", "description": "application (client) id"},
                "client_secret": {"type": "string", "description": "the secret's value"},
                "license_sku": {"type": "string", "description": "SKU id or part number"},
                "usage_location": {"type": "string", "default": "US"},
            },
        },
        {
            "title": "whatsapp",
            "type": "object",
            "required": ["waba_id"],
            "properties": {
                "waba_id": {
                    "type": "string",
                    "pattern": "^[0-9]{5,20}$",
                    "description": "the account's WhatsApp Business Account id, shared with "
                    "the platform's Twilio account; its senders are registered under it",
                },
            },
        },
    ]
}


def install(app: FastAPI, *, call: Call, service: ConnectionService, settings: Settings) -> None:
    """Add the `/v0/providers/{provider}` routes."""

    @app.put(
        "/v0/providers/{provider}",
        tags=["providers"],
        responses={
            200: schemas.ok(schemas.ProviderConnectionResponse, "The connection, no secrets"),
            **PUT_ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BODY_SCHEMA}},
            }
        },
    )
    async def set_connection(request: Request, provider: str) -> JSONResponse:
        """Connect the account's own Google Workspace (a service account with domain-wide
        delegation) or Microsoft 365 tenant (an app registration); the credentials are
        checked by obtaining a token before they are kept, encrypted. Or its own WhatsApp
        Business Account (`whatsapp`, `{"waba_id"}`): the account's WhatsApp senders are
        registered under it, not the platform's. Replaces the account's connection to that
        provider."""
        raw = await read_body(request, settings.max_body_bytes)
        info = await call(
            request, lambda account_id: service.put(account_id, provider, parse_json(raw))
        )
        return JSONResponse({"info": info})

    @app.get(
        "/v0/providers/{provider}",
        tags=["providers"],
        responses={
            200: schemas.ok(schemas.ProviderConnectionResponse, "The connection, no secrets"),
            **AUTHENTICATED,
            404: NOT_SET,
            422: error_schema("A path too long to be a provider (`invalid_request`)"),
        },
    )
    async def get_connection(request: Request, provider: str) -> JSONResponse:
        """The account's connection to the provider, without its secrets."""
        info = await call(request, lambda account_id: service.get(account_id, provider))
        return JSONResponse({"info": info})

    @app.delete(
        "/v0/providers/{provider}",
        status_code=204,
        tags=["providers"],
        responses={
            204: {"description": "Removed"},
            **AUTHENTICATED,
            404: NOT_SET,
            409: error_schema("A live contact uses it (`connection_in_use`)"),
            422: error_schema("A path too long to be a provider (`invalid_request`)"),
        },
    )
    async def delete_connection(request: Request, provider: str) -> Response:
        """Remove the connection (its secrets with it); refused while a live contact uses it."""
        await call(request, lambda account_id: service.delete(account_id, provider))
        return Response(status_code=204)
