"""Routes of an account's Twilio regulatory documents (`/v0/providers/twilio/regulatory`):
thin, over worker.app.regulatory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response

from api_stub import schemas
from api_stub.errors import AUTHENTICATED, RETRY_AFTER, JSONResponse, error_schema
from api_stub.limits_mw import read_body
from worker.app.contacts import parse_json
from worker.app.regulatory import RegulatoryService
from worker.settings import Settings

Call = Callable[[Request, Callable[[int], Any]], Awaitable[Any]]

BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "number_type": {
            "type": "string",
            "enum": ["local", "mobile", "national", "toll_free"],
            "default": "local",
        },
        "bundle_sid": {"type": ["string", "null"], "description": "a twilio-approved BU... SID"},
        "address_sid": {"type": ["string", "null"], "description": "an AD... SID"},
    },
}
INVALID = error_schema(
    "Invalid body, or a document Twilio's answer refutes (`invalid_request`, with `fields` "
    "naming `bundle_sid`, `address_sid`, `number_type` or `country`)"
)


def install(app: FastAPI, *, call: Call, service: RegulatoryService, settings: Settings) -> None:
    """Add the `/v0/providers/twilio/regulatory` routes."""

    @app.put(
        "/v0/providers/twilio/regulatory/{country}",
        tags=["providers"],
        responses={
            200: schemas.ok(schemas.RegulatoryDocumentsResponse, "The documents, as checked"),
            **AUTHENTICATED,
            413: error_schema("Body over 64 KiB (`payload_too_large`)"),
            422: INVALID,
            503: error_schema(
                "The database, or Twilio checking the documents, is unavailable "
                "(`unavailable`, `provider_unavailable`); retry after `Retry-After`",
                {"Retry-After": RETRY_AFTER},
            ),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BODY_SCHEMA}},
            }
        },
    )
    async def set_documents(request: Request, country: str) -> JSONResponse:
        """Set the account's regulatory bundle and address for a country's numbers of one
        type, after Twilio confirmed them (the bundle exists, is `twilio-approved` and is for
        that country and type; the address exists and meets the type's address requirement).
        Replaces earlier documents of that country and type."""
        raw = await read_body(request, settings.max_body_bytes)
        info = await call(
            request, lambda account_id: service.put(account_id, country, parse_json(raw))
        )
        return JSONResponse({"info": info})

    @app.get(
        "/v0/providers/twilio/regulatory",
        tags=["providers"],
        responses={
            200: schemas.ok(schemas.RegulatoryDocumentsListResponse, "Every country and type set"),
            **AUTHENTICATED,
        },
    )
    async def list_documents(request: Request) -> JSONResponse:
        """The account's regulatory documents, by country and number type."""
        info = await call(request, service.list)
        return JSONResponse({"info": info})

    @app.delete(
        "/v0/providers/twilio/regulatory/{country}",
        status_code=204,
        tags=["providers"],
        responses={
            204: {"description": "Removed"},
            **AUTHENTICATED,
            404: error_schema("None set for that country and type (`not_found`)"),
            409: error_schema("A live contact's number uses them (`regulatory_in_use`)"),
            422: error_schema("Not a country, or a type it lacks (`invalid_request`)"),
        },
    )
    async def delete_documents(
        request: Request, country: str, number_type: str = "local"
    ) -> Response:
        """Remove the documents of a country's `number_type` numbers; refused while a live
        contact's number was bought with them."""
        await call(request, lambda account_id: service.delete(account_id, country, number_type))
        return Response(status_code=204)
