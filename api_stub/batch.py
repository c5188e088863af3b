"""Batch routes: `POST /v0/contact/batch` and `GET /v0/contact/batch/{batch_id}`.

`install(app, call=..., service=..., settings=...)` adds them to the app built by
`create_app`; `call` is its authenticate-rate-limit-and-run-in-the-thread-pool helper.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam

from api_stub.errors import JSONResponse, error_schema
from api_stub.limits_mw import read_body
from api_stub.openapi import CONTACT_BODY_SCHEMA
from worker.batches import BatchService
from worker.service import ContactService
from worker.settings import Settings

PATH = "/v0/contact/batch"

Call = Callable[[Request, Callable[[int], Any]], Awaitable[Any]]


def _item_schema() -> dict[str, Any]:
    schema = dict(CONTACT_BODY_SCHEMA)
    schema["required"] = ["assistant_id", *CONTACT_BODY_SCHEMA["required"]]
    schema["properties"] = {
        "assistant_id": {"type": "integer", "minimum": 1},
        **CONTACT_BODY_SCHEMA["properties"],
    }
    return schema


def _batch_body_schema(max_items: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_items,
                "items": _item_schema(),
                "description": "each item is judged alone, with the single route's rules",
            }
        },
    }


def install(app: FastAPI, *, call: Call, service: ContactService, settings: Settings) -> None:
    batches = BatchService(service)
    errors: dict[int | str, dict[str, Any]] = {
        401: error_schema("Missing or invalid API key (`unauthenticated`)"),
        404: error_schema("Batch not found (`not_found`)"),
        422: error_schema(
            "Not a batch: `items` missing, empty or too long (`invalid_request`), or "
            "`idempotency_key_reused`"
        ),
        429: error_schema("Too many requests for this key (`rate_limited`)"),
    }
    post_errors = {
        **{k: v for k, v in errors.items() if k != 404},
        409: error_schema("`idempotency_key_in_flight`"),
        413: error_schema(f"Body over {settings.max_batch_body_bytes} bytes (`payload_too_large`)"),
    }

    @app.post(
        PATH,
        status_code=202,
        tags=["batches"],
        responses=post_errors,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _batch_body_schema(settings.batch_max_items)}
                },
            },
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                }
            ],
        },
    )
    async def create_batch(request: Request) -> JSONResponse:
        """Accept up to 1,000 contact requests; each is accepted or rejected on its own.

        Accepted contacts are provisioned from the `bulk` queue; poll the batch for progress.
        """
        body = await read_body(request, settings.max_batch_body_bytes)
        reply = await call(
            request,
            lambda account_id: batches.submit(
                account_id,
                body,
                path=PATH,
                idempotency_key=request.headers.get("idempotency-key"),
            ),
        )
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    @app.get(f"{PATH}/{{batch_id}}", tags=["batches"], responses=errors)
    async def get_batch(
        request: Request, batch_id: str = PathParam(max_length=64)
    ) -> dict[str, Any]:
        """The batch's contacts counted by status; `done` once every one is active or failed."""
        info = await call(request, lambda account_id: batches.get(account_id, batch_id))
        return {"info": info}

    @app.get(f"{PATH}/{{batch_id}}/contacts", tags=["batches"], responses=errors)
    async def list_batch_contacts(
        request: Request,
        batch_id: str = PathParam(max_length=64),
        limit: int = Query(100, ge=1, le=1000),
        starting_after: str | None = Query(None, max_length=64),
    ) -> dict[str, Any]:
        """The batch's contacts (as the single route shows them), in id order, a page at a
        time: pass the last id seen as `starting_after`."""
        info = await call(
            request,
            lambda account_id: batches.contacts_of(account_id, batch_id, limit, starting_after),
        )
        return {"info": info}
