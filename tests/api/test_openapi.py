"""The OpenAPI document itself: every answer documented with a real schema (issue 8)."""

from __future__ import annotations

import pytest

# The contract's Contact (CONTRACT.md, "HTTP API"): exactly these fields, every one always sent.
CONTRACT_CONTACT_FIELDS = {
    "id",
    "assistant_id",
    "contact_type",
    "status",
    "address",
    "request",
    "setup_cost",
    "monthly_cost",  # beside the contract's fields: the fee fixed on the contact at acceptance
    "charged",
    "billed_through",
    "grace_ends_at",
    "deleted_at",
    "deleted_reason",
    "error",
    "stuck",  # issue 18: a failing contact whose clean-up needs an operator
    "steps",
    "batch_id",
    "created_at",
    "updated_at",
}
UNAUTHENTICATED_ROUTES = {"/healthz", "/readyz", "/metrics"}


@pytest.fixture
def openapi(settings, db):
    from api_stub.app import create_app

    class NoPublisher:
        def provision(self, contact_id: str, *, queue: str) -> None:
            raise AssertionError("nothing is published here")

    return create_app(settings, db=db, publisher=NoPublisher()).openapi()


def _operations(openapi):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", path, operation


def _resolve(openapi, schema):
    ref = schema.get("$ref", "")
    return openapi["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def test_every_success_has_a_real_schema(openapi):
    seen = 0
    for label, _path, operation in _operations(openapi):
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert successes, f"{label}: no success response"
        for status, response in successes.items():
            content = response.get("content")
            if status == "204":  # No Content (DELETE /v0/providers/...): must have no body
                assert not content, f"{label} 204 documents a body"
                continue
            assert content, f"{label} {status}: no content"
            for media_type, body in content.items():
                schema = body.get("schema")
                assert schema, f"{label} {status} {media_type}: no schema"
                if "json" in media_type:
                    seen += 1
                    assert schema != {"type": "string"}, f"{label} {status}: a bare string"
                    resolved = _resolve(openapi, schema)
                    assert resolved.get("type") == "object", f"{label} {status}: {schema}"
                    assert resolved["required"] == ["info"], f"{label} {status}: no envelope"
                else:
                    assert media_type == "text/plain", label
    assert seen >= 14


def test_contact_schema_matches_the_contract(openapi):
    contact = openapi["components"]["schemas"]["Contact"]
    assert set(contact["properties"]) == CONTRACT_CONTACT_FIELDS
    assert set(contact["required"]) == CONTRACT_CONTACT_FIELDS
    assert contact["additionalProperties"] is False
    for name in ("id", "assistant_id", "contact_type", "status", "request", "steps"):
        assert "null" not in str(contact["properties"][name]), name
    for name in (
        "address",
        "error",
        "batch_id",
        "billed_through",
        "grace_ends_at",
        "deleted_at",
        "deleted_reason",
    ):
        assert {"type": "null"} in contact["properties"][name]["anyOf"], name
    schemas = openapi["components"]["schemas"]
    assert schemas["ContactStatus"]["enum"] == [
        "pending",
        "provisioning",
        "active",
        "grace_period",
        "deleting",
        "failed",
        "deleted",
    ]
    assert schemas["DeletedReason"]["enum"] == ["requested", "cancelled", "unpaid"]
    assert set(schemas["StepStatus"]["enum"]) == {
        "pending",
        "running",
        "done",
        "skipped",
        "failed",
        "compensated",
    }
    assert set(schemas["Step"]["properties"]) == {"name", "status", "attempts"}
    assert set(schemas["ContactError"]["properties"]) == {"code", "message"}


def test_every_error_is_the_one_error_envelope(openapi):
    for label, path, operation in _operations(openapi):
        responses = operation["responses"]
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (label, status)
        if path in UNAUTHENTICATED_ROUTES:
            assert "security" not in operation, label
        else:
            assert operation["security"] == [{"bearerAuth": []}], label
            assert {"401", "429", "503"} <= set(responses), label
            assert "Retry-After" in responses["429"]["headers"], label
            assert "Retry-After" in responses["503"]["headers"], label
    assert openapi["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    error = openapi["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]


def test_created_answers_name_their_location(openapi):
    paths = openapi["paths"]
    for path in ("/v0/assistant/{assistant_id}/contact", "/v0/contact/batch"):
        accepted = paths[path]["post"]["responses"]["202"]
        assert accepted["headers"]["Location"]["required"] is True, path
