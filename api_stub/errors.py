"""The one error envelope, and the HTTP status of each domain error code."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response

from api_stub.schemas import ErrorResponse
from worker.domain.errors import DomainError


class JSONResponse(StarletteJSONResponse):
    """JSON rendered by orjson (datetimes, Decimals-as-strings already shaped by the views).

    A subclass of Starlette's JSONResponse so that FastAPI documents a route's answers as
    JSON with the schema its `responses=` names (else it writes `{"type": "string"}`).
    """

    media_type = "application/json"
    # Starlette's JSONResponse.__init__ only forwards to Response.__init__: skip the hop.
    __init__ = Response.__init__

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


STATUS = {
    "invalid_request": 422,
    "not_found": 404,
    "insufficient_credits": 402,
    "contact_exists": 409,
    "idempotency_key_reused": 422,
    "idempotency_key_in_flight": 409,
    "invalid_transition": 409,
    "connection_in_use": 409,
    "address_in_use": 409,
    "regulatory_bundle_required": 422,
    "regulatory_address_required": 422,
    "regulatory_in_use": 409,
    "provider_unavailable": 503,
}


def error_response(
    status: int,
    code: str,
    message: str,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def domain_error_response(exc: DomainError) -> JSONResponse:
    # A provider that could not be reached (checking a connection) is worth a retry soon.
    headers = {"Retry-After": "5"} if exc.code == "provider_unavailable" else None
    return error_response(
        STATUS.get(exc.code, 400), exc.code, exc.message, exc.fields, headers=headers
    )


def header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response header for `responses=`; present on every answer of that status."""
    return {"description": description, "required": True, "schema": schema or {"type": "string"}}


RETRY_AFTER = header("seconds to wait before retrying", {"type": "string", "pattern": "^[0-9]+$"})


def error_schema(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error entry for a route's `responses=`: the one error envelope (`ErrorResponse`)."""
    entry: dict[str, Any] = {"description": description, "model": ErrorResponse}
    if headers:
        entry["headers"] = headers
    return entry


# The errors that every authenticated route can give, whatever it does.
UNAUTHENTICATED = error_schema(
    "Missing or invalid API key (`unauthenticated`)",
    {"WWW-Authenticate": header("`Bearer`")},
)
RATE_LIMITED = error_schema(
    "Too many requests for this key (`rate_limited`)", {"Retry-After": RETRY_AFTER}
)
UNAVAILABLE = error_schema(
    "The database is unavailable (`unavailable`); retry after `Retry-After`",
    {"Retry-After": RETRY_AFTER},
)
AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: UNAUTHENTICATED,
    429: RATE_LIMITED,
    503: UNAVAILABLE,
}
