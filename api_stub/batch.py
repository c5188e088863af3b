"""Batch routes: `POST /v0/contact/batch` and `GET /v0/contact/batch/{batch_id}`.

`install(app, call=..., service=..., settings=...)` adds them to the app built by
`create_app`; `call` is its authenticate-rate-limit-and-run-in-the-thread-pool helper.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from api_stub import live, schemas
from api_stub.errors import AUTHENTICATED, JSONResponse, error_schema, header
from api_stub.limits_mw import read_body
from api_stub.openapi import CONTACT_BODY_SCHEMA, IDEMPOTENCY_KEY_PARAMETER, IDEMPOTENT_REPLAYED
from worker.app.batches import BatchService
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


def install(
    app: FastAPI,
    *,
    call: Call,
    service: BatchService,
    settings: Settings,
    waiters: live.Waiters,
) -> None:
    batches = service
    reads = live.SingleFlight()
    errors: dict[int | str, dict[str, Any]] = {
        **AUTHENTICATED,
        404: error_schema("Batch not found (`not_found`)"),
        422: error_schema("Invalid `limit` or `starting_after` (`invalid_request`)"),
    }
    post_errors: dict[int | str, dict[str, Any]] = {
        **AUTHENTICATED,
        409: error_schema("`idempotency_key_in_flight`"),
        413: error_schema(f"Body over {settings.max_batch_body_bytes} bytes (`payload_too_large`)"),
        422: error_schema(
            "Not a batch: `items` missing, empty or too long (`invalid_request`), or "
            "`idempotency_key_reused`"
        ),
    }

    @app.post(
        PATH,
        status_code=202,
        tags=["batches"],
        responses={
            202: schemas.ok(
                schemas.BatchAcceptedResponse,
                "Every item's fate: accepted (with its contact id) or rejected (with its error)",
                {
                    "Location": header("the batch's URL"),
                    "Idempotent-Replayed": IDEMPOTENT_REPLAYED,
                },
            ),
            **post_errors,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _batch_body_schema(settings.batch_max_items)}
                },
            },
            "parameters": [IDEMPOTENCY_KEY_PARAMETER],
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

    @app.get(
        f"{PATH}/{{batch_id}}",
        tags=["batches"],
        responses={
            200: schemas.ok(schemas.BatchStatusResponse, "The batch's progress"),
            **{k: v for k, v in errors.items() if k != 422},
            422: error_schema("`batch_id` too long (`invalid_request`)"),
        },
    )
    async def get_batch(
        request: Request,
        batch_id: str = PathParam(max_length=64),
        wait: float = Query(
            0, ge=0, le=60, description="Long poll: seconds to wait for `counts` to change"
        ),
    ) -> JSONResponse:
        """The batch's contacts counted by status; `done` once every one is active or failed.
        With `wait`: as soon as `done`, or when the counts change, or after `wait` seconds."""
        if not wait:
            info = await call(request, lambda account_id: batches.get(account_id, batch_id))
            return JSONResponse({"info": info})
        with waiters.watch(("batch", batch_id)) as woken:
            await waiters.ready()
            account_id, info = await call(
                request, lambda account_id: (account_id, batches.get(account_id, batch_id))
            )
            first = info["counts"]
            info = await waiters.wait_until(
                woken,
                wait,
                lambda: reads.read(
                    (account_id, batch_id),
                    lambda: run_in_threadpool(batches.get, account_id, batch_id),
                ),
                lambda value: value["done"] or value["counts"] != first,
                info,
            )
        return JSONResponse({"info": info})

    @app.get(
        f"{PATH}/{{batch_id}}/contacts",
        tags=["batches"],
        responses={
            200: schemas.ok(schemas.ContactListResponse, "A page of the batch's contacts"),
            **errors,
        },
    )
    async def list_batch_contacts(
        request: Request,
        batch_id: str = PathParam(max_length=64),
        limit: int = Query(100, ge=1, le=1000),
        starting_after: str | None = Query(None, max_length=64),
    ) -> JSONResponse:
        """The batch's contacts (as the single route shows them), in id order, a page at a
        time: pass the last id seen as `starting_after`."""
        info = await call(
            request,
            lambda account_id: batches.contacts_of(account_id, batch_id, limit, starting_after),
        )
        return JSONResponse({"info": info})
