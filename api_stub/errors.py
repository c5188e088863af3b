"""The one error envelope, and the HTTP status of each domain error code."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from worker.domain.errors import DomainError


class JSONResponse(Response):
    """JSON rendered by orjson (datetimes, Decimals-as-strings already shaped by the views)."""

    media_type = "application/json"

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
    return error_response(STATUS.get(exc.code, 400), exc.code, exc.message, exc.fields)


def error_schema(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "fields": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        }
                    },
                }
            }
        },
    }
