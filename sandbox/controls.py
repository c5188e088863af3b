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
from sandbox.state import NotFound, Onboarding, SinkDelivery, utcnow

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
    twilio_concurrency_limit: int | None = Field(default=None, ge=0)


# Fields where an explicit null is a value (unlimited rate or concurrency, unseeded, random
# 500/503).
_NULLABLE = {"rate_limit_per_s", "seed", "error_status", "twilio_concurrency_limit"}


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
                "waba_id": s.waba_id,
                "verification": s.verification_code is not None,
                "account_sid": s.account_sid,
                "phone_number_sid": s.number_sid,
                "created_at": _iso(s.date_created),
            }
            for s in senders
        ],
    }


class WabaBody(BaseModel):
    """A WhatsApp Business Account shared with Twilio; Meta caps its senders (2 before the
    business is verified, 20 after; the default here is Meta's unverified cap)."""

    model_config = ConfigDict(extra="forbid")

    sender_limit: int = Field(default=2, ge=0, le=1_000_000)
    account_sid: str | None = None  # set: only that Twilio account may use it


class OnboardingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verification_rate: float = Field(default=0.0, ge=0, le=1)
    verifying_s: float = Field(default=2.0, ge=0, le=86_400)
    review_s: float = Field(default=0.0, ge=0, le=86_400)
    seed: int | None = None


class OfflineBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(default="63100", min_length=1, max_length=10)
    message: str = Field(default="The sender was taken offline", min_length=1, max_length=300)


@router.put("/twilio/wabas/{waba_id}")
async def put_waba(request: Request, waba_id: str, body: WabaBody) -> dict[str, Any]:
    sandbox_state(request).put_waba(waba_id, body.sender_limit, body.account_sid)
    return {"waba_id": waba_id, **body.model_dump()}


@router.get("/twilio/wabas")
async def list_wabas(request: Request) -> list[dict[str, Any]]:
    return [
        {
            "waba_id": w.waba_id,
            "sender_limit": w.sender_limit,
            "account_sid": w.account_sid,
            "senders": used,
        }
        for w, used in sandbox_state(request).wabas()
    ]


@router.put("/twilio/senders/onboarding")
async def put_onboarding(request: Request, body: OnboardingBody) -> dict[str, Any]:
    values = body.model_dump(exclude={"seed"})
    sandbox_state(request).set_onboarding(Onboarding(**values), body.seed)
    return values


@router.get("/twilio/senders/onboarding")
async def get_onboarding(request: Request) -> dict[str, Any]:
    onboarding = sandbox_state(request).onboarding
    return {
        "verification_rate": onboarding.verification_rate,
        "verifying_s": onboarding.verifying_s,
        "review_s": onboarding.review_s,
    }


@router.post("/twilio/senders/{sid}/offline")
async def take_offline(request: Request, sid: str, body: OfflineBody) -> dict[str, Any]:
    try:
        record = sandbox_state(request).take_offline(sid, body.code, body.message)
    except NotFound as exc:
        raise HTTPException(status_code=404, detail=f"no sender {sid}") from exc
    return {"sid": record.sid, "status": "OFFLINE", "code": body.code, "message": body.message}


@router.get("/twilio/numbers/{number}/messages")
async def number_messages(request: Request, number: str) -> list[dict[str, Any]]:
    """The SMS a number received (every account's), newest first."""
    return [
        {"sid": m.sid, "from": m.from_, "to": m.to, "body": m.body, "date_sent": _iso(m.date_sent)}
        for m in sandbox_state(request).messages(None, number)
    ]


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
