"""Property-based walk of the OpenAPI schema (issue 8): over every operation, no input gives a
5xx, a status the operation does not declare, a content type it does not declare, a body that
breaks its declared schema, or a declared header missing or malformed."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_PER_OPERATION = 60
CHECKS = [
    not_a_server_error,  # first: the database-down test leaves it out
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    # Location, Retry-After and WWW-Authenticate present where declared, and as declared.
    response_headers_conformance,
]


def _operations(api_url):
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    return {
        f"{op.method.upper()} {op.path}": op
        for op in (result.ok() for result in schema.get_all_operations())
    }


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_to_its_schema(api_url, make_tenant, mode):
    tenant = make_tenant(assistants=3)
    operations = _operations(api_url)
    assert len(operations) >= 15

    failures = {}
    for label, operation in operations.items():

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case):
            params = case.path_parameters or {}
            if isinstance(params.get("assistant_id"), int) and params["assistant_id"] % 2:
                # Half the cases aim at an assistant that exists, so bodies get past the 404.
                params["assistant_id"] = tenant.assistant_ids[0]
            response = case.call(base_url=api_url, headers=tenant.headers)
            case.validate_response(response, checks=CHECKS)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert isinstance(error["code"], str) and isinstance(error["message"], str)

        try:
            check()
        except Unsatisfiable:
            # No input of this operation can break its schema (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, label
        # Every operation is walked and all failures are reported (schemathesis raises a
        # FailureGroup, a BaseExceptionGroup).
        except (Exception, BaseExceptionGroup) as exc:
            failures[label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())


def test_answers_with_real_data_conform(api_url, make_tenant):
    """The fuzzer rarely hits an id that exists: walk the success paths with real ones."""
    tenant = make_tenant(assistants=2)
    ops = _operations(api_url)
    a, b = tenant.assistant_ids

    def call(label, *, path=None, body=None, query=None, headers=None, expect):
        kwargs = {"path_parameters": path or {}, "query": query, "headers": headers}
        if body is not None:
            kwargs["body"] = body
            kwargs["media_type"] = "application/json"
        case = ops[label].Case(**kwargs)
        response = case.call(base_url=api_url, headers=tenant.headers)
        assert response.status_code == expect, response.text
        case.validate_response(response, checks=CHECKS)
        ctype = response.headers.get("content-type", [""])[0]  # schemathesis: name -> values
        return response.json() if ctype.startswith("application/json") else response.text

    contact = call(
        "POST /v0/assistant/{assistant_id}/contact",
        path={"assistant_id": a},
        body={"contact_type": "email", "email_local": "ada", "first_name": "A", "last_name": "L"},
        headers={"Idempotency-Key": "schema-1"},
        expect=202,
    )["info"]
    call(  # the replay, with its Idempotent-Replayed header
        "POST /v0/assistant/{assistant_id}/contact",
        path={"assistant_id": a},
        body={"contact_type": "email", "email_local": "ada", "first_name": "A", "last_name": "L"},
        headers={"Idempotency-Key": "schema-1"},
        expect=202,
    )
    call(
        "POST /v0/assistant/{assistant_id}/contact",
        path={"assistant_id": a},
        body={"contact_type": "email", "email_local": "bob", "first_name": "B", "last_name": "L"},
        expect=409,
    )
    call(
        "GET /v0/assistant/{assistant_id}/contact/{contact_id}",
        path={"assistant_id": a, "contact_id": contact["id"]},
        expect=200,
    )
    listed = call("GET /v0/assistant/{assistant_id}/contact", path={"assistant_id": a}, expect=200)
    assert [c["id"] for c in listed["info"]] == [contact["id"]]

    batch = call(
        "POST /v0/contact/batch",
        body={
            "items": [
                {"assistant_id": b, "contact_type": "phone", "phone_country": "US"},
                {"assistant_id": b, "contact_type": "whatsapp"},
            ]
        },
        expect=202,
    )["info"]
    assert len(batch["accepted"]) == 1 and len(batch["rejected"]) == 1
    call("GET /v0/contact/batch/{batch_id}", path={"batch_id": batch["batch_id"]}, expect=200)
    page = call(
        "GET /v0/contact/batch/{batch_id}/contacts",
        path={"batch_id": batch["batch_id"]},
        expect=200,
    )
    assert len(page["info"]) == 1

    call("GET /v0/credits", expect=200)
    call("GET /v0/providers/twilio/regulatory", expect=200)
    call(
        "PUT /v0/providers/twilio/regulatory/{country}",
        path={"country": "GB"},
        body={"number_type": "local"},  # GB numbers need a bundle: refused before Twilio
        expect=422,
    )
    call(
        "DELETE /v0/providers/twilio/regulatory/{country}",
        path={"country": "GB"},
        query={"number_type": "local"},
        expect=404,
    )
    call("GET /v0/webhook", expect=200)
    call("POST /v0/webhook/rotate-secret", expect=404)
    call("PUT /v0/webhook", body={"url": "http://127.0.0.1:9/a"}, expect=200)
    call("PUT /v0/webhook", body={"url": "http://127.0.0.1:9/b"}, expect=200)
    call("GET /v0/webhook", expect=200)
    call("POST /v0/webhook/rotate-secret", expect=200)
    call("GET /v0/webhook/deliveries", query={"contact_id": contact["id"]}, expect=200)
    call("DELETE /v0/webhook", expect=200)
    call("DELETE /v0/webhook", expect=200)
    call("GET /healthz", expect=200)
    call("GET /readyz", expect=200)
    assert "http_requests" in call("GET /metrics", expect=200)

    # A method the path does not have: 405 in the error envelope, with `Allow`.
    response = httpx.patch(f"{api_url}/v0/webhook", headers=tenant.headers)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "PUT", "DELETE"}


def test_database_down_answers_are_documented(make_settings, tmp_path):
    """With the database gone, authenticated routes answer the documented 503 `unavailable`
    (with Retry-After) and readyz its 503 `not_ready`; both conform to the schema."""
    from support.services import serve_in_thread

    from api_stub.app import create_app
    from worker.store.db import Database

    broken = Database(f"sqlite:///{tmp_path}")  # a directory: every connection fails
    app = create_app(make_settings(), db=broken)
    try:
        with serve_in_thread(app) as url:
            ops = _operations(url)
            for label, kwargs, status, code in [
                ("GET /v0/credits", {}, 503, "unavailable"),
                (
                    "POST /v0/assistant/{assistant_id}/contact",
                    {
                        "path_parameters": {"assistant_id": 1},
                        "body": {"contact_type": "phone"},
                        "media_type": "application/json",
                    },
                    503,
                    "unavailable",
                ),
                ("GET /readyz", {}, 503, "not_ready"),
                ("GET /healthz", {}, 200, None),
            ]:
                case = ops[label].Case(**kwargs)
                response = case.call(base_url=url, headers={"Authorization": "Bearer k"})
                assert response.status_code == status, (label, response.text)
                # The 503 is the point here: every check but "no 5xx".
                case.validate_response(response, checks=CHECKS[1:])
                if code is not None:
                    assert response.json()["error"]["code"] == code, label
    finally:
        broken.dispose()
