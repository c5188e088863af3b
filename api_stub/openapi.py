"""OpenAPI fragments for routes that read their body raw (validation lives in the domain)."""

from __future__ import annotations

from typing import Any

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
    },
}
