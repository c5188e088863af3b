"""OpenAPI fragments for routes that read their body raw (validation lives in the domain)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}

CONTACT_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["contact_type"],
    "properties": {
        "contact_type": {"type": "string", "enum": ["phone", "email", "whatsapp"]},
        "phone_country": {**_NULLABLE_STRING, "default": "US", "description": "ISO 3166-1 alpha-2"},
        "user_phone": {**_NULLABLE_STRING, "description": "E.164; calls forward here (phone)"},
        "email_local": {**_NULLABLE_STRING, "description": "local part of the address (email)"},
        "first_name": {**_NULLABLE_STRING, "description": "required for email"},
        "last_name": {**_NULLABLE_STRING, "description": "required for email"},
        "user_whatsapp_number": {**_NULLABLE_STRING, "description": "E.164 (whatsapp)"},
        "email_provider": {
            **_NULLABLE_STRING,
            "description": "google or microsoft (email); default: the account's one connection, "
            "else the platform's Google",
        },
        "provisioned_by": {
            **_NULLABLE_STRING,
            "description": "user: record `address`, an existing number or email address, "
            "active at once and free",
        },
        "address": {**_NULLABLE_STRING, "description": "with provisioned_by user"},
        "phone_number_type": {
            **_NULLABLE_STRING,
            "default": "local",
            "description": "phone: local, mobile, national or toll_free (one the country has)",
        },
    },
}

IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a repeat with the same body within 24 hours returns the first answer, "
    "with `Idempotent-Replayed: true` (worker.domain.idempotency.check_key)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}

# The response header of a replay (not required: a first answer has none).
IDEMPOTENT_REPLAYED: dict[str, Any] = {
    "description": "`true` when this is the stored answer to an earlier request with the same "
    "`Idempotency-Key`",
    "schema": {"type": "string", "enum": ["true"]},
}


BEARER_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": "an API key from `provisioner accounts create`",
}


def document_bearer_auth(app: FastAPI, public_paths: set[str]) -> None:
    """Name the bearer scheme in the document and require it on every operation but those of
    `public_paths`. Documentation only: `create_app` authenticates in its `call` helper, so no
    dependency runs per request for it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {})["bearerAuth"] = BEARER_SCHEME
            for path, item in schema["paths"].items():
                if path not in public_paths:
                    for operation in item.values():
                        operation["security"] = [{"bearerAuth": []}]
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
