"""The sandbox's own control endpoints under `/_sandbox` (no provider protocol, no faults)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.http import faults, sandbox_state
from sandbox.state import SinkDelivery, utcnow

router = APIRouter(prefix="/_sandbox")


class FaultUpdate(BaseModel):
    """Body of `PUT /_sandbox/faults`; every field optional, unknown fields refused."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float | None = Field(default=None, ge=0, le=1)
    latency_ms: float | None = Field(default=None, ge=0)
    rate_limit_per_s: float | None = Field(default=None, ge=0)
    timeout_rate: float | None = Field(default=None, ge=0, le=1)
    drop_after_commit_rate: float | None = Field(default=None, ge=0, le=1)
    sender_online_after_s: float | None = Field(default=None, ge=0)
    timeout_hold_s: float | None = Field(default=None, gt=0)
    seed: int | None = None
    drop_after_commit_mode: Literal["random", "error", "disconnect"] | None = None
    error_status: Literal[500, 503] | None = None


# Fields where an explicit null is a value (unlimited rate, unseeded, random 500/503).
_NULLABLE = {"rate_limit_per_s", "seed", "error_status"}


class ResetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inventory_per_country: int | None = Field(default=None, ge=0, le=1_000_000)


class SinkStatus(BaseModel):
    status: int = Field(ge=100, le=599)
    # Held after recording, before answering: a receiver that is slow (or a send in flight).
    delay_ms: float | None = Field(default=None, ge=0, le=600_000)


@router.put("/faults")
async def put_faults(request: Request, update: FaultUpdate) -> dict[str, Any]:
    changes = {
        key: value
        for key, value in update.model_dump(exclude_unset=True).items()
        if value is not None or key in _NULLABLE
    }
    return faults(request).update(changes).as_dict()


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    return faults(request).config().as_dict()


@router.get("/stats")
async def get_stats(request: Request) -> dict[str, Any]:
    return faults(request).stats()


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = ResetBody.model_validate(json.loads(raw) if raw.strip() else {})
    except (ValueError, ValidationError) as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    inventory = body.inventory_per_country
    if inventory is None:
        inventory = request.app.state.default_inventory
    sandbox_state(request).reset(inventory)
    request.app.state.identity.reset()
    request.app.state.graph.reset()
    request.app.state.regulatory.reset()
    faults(request).reset()
    return {"ok": True, "inventory_per_country": inventory}


@router.get("/resources")
async def resources(request: Request) -> dict[str, Any]:
    state = sandbox_state(request)
    numbers, senders, users = state.snapshot()
    online_after = faults(request).config().sender_online_after_s
    number_tags = state.number_tags()
    return {
        "phone_numbers": [
            {
                "id": n.sid,
                "address": n.phone_number,
                "tag": n.tag,
                "account_sid": n.account_sid,
                "country": n.country,
                "friendly_name": n.friendly_name,
                "voice_url": n.fields.get("VoiceUrl"),
                "number_type": n.number_type,
                "bundle_sid": n.bundle_sid,
                "address_sid": n.address_sid,
                "created_at": _iso(n.date_created),
            }
            for n in numbers
        ],
        "users": [
            {
                "id": u.id,
                "address": u.primary_email,
                "tag": u.tag,
                "name": f"{u.given_name} {u.family_name}",
                "provider": "google",
                "created_at": _iso(u.creation_time),
            }
            for u in users
        ]
        + [
            {
                "id": u.id,
                "address": u.upn,
                "tag": u.attribute("onPremisesExtensionAttributes/extensionAttribute15"),
                "name": u.fields.get("displayName"),
                "provider": "microsoft",
                "tenant": u.tenant,
                "licenses": list(u.licences),
                "created_at": _iso(u.created_at),
            }
            for u in request.app.state.graph.snapshot()
        ],
        "senders": [
            {
                "id": s.sid,
                "address": s.sender_id,
                "tag": number_tags.get(s.number_sid, s.number_tag),
                "status": s.status(online_after),
                "account_sid": s.account_sid,
                "phone_number_sid": s.number_sid,
                "created_at": _iso(s.date_created),
            }
            for s in senders
        ],
    }


@router.post("/sink/{name}")
async def sink_receive(request: Request, name: str) -> Response:
    delivery = SinkDelivery(
        headers={k.lower(): v for k, v in request.headers.items()},
        body=(await request.body()).decode("utf-8", errors="replace"),
        received_at=_iso(utcnow()),
    )
    state = sandbox_state(request)
    status = state.record_sink(name, delivery)
    delay_s = state.sink_delay_s(name)
    if delay_s:
        await asyncio.sleep(delay_s)
    return JSONResponse({"received": True}, status_code=status)


@router.put("/sink/{name}")
async def sink_set_status(request: Request, name: str, body: SinkStatus) -> dict[str, Any]:
    delay_s = body.delay_ms / 1000 if body.delay_ms is not None else None
    sandbox_state(request).set_sink_status(name, body.status, delay_s)
    return {"name": name, "status": body.status, "delay_ms": body.delay_ms}


@router.get("/sink/{name}")
async def sink_list(request: Request, name: str) -> list[dict[str, Any]]:
    return [
        {"headers": d.headers, "body": d.body, "received_at": d.received_at}
        for d in sandbox_state(request).sink(name)
    ]


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
