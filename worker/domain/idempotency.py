"""Idempotency-Key decisions (IETF httpapi draft, Stripe): replay, refuse, or proceed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from worker.domain.errors import IdempotencyKeyInFlight, IdempotencyKeyReused, InvalidRequest

KEY_MAX = 255


class Decision(StrEnum):
    PROCEED = "proceed"  # no live record: run the request
    REPLAY = "replay"  # same request finished before: answer the stored response
    TAKE_OVER = "take_over"  # a first attempt died mid-flight long ago: run it again


@dataclass(frozen=True)
class KeyRecord:
    fingerprint: str
    completed: bool
    locked_at: datetime
    expires_at: datetime


def check_key(key: str) -> str:
    if not key or len(key) > KEY_MAX or not key.isprintable() or not key.isascii():
        raise InvalidRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            {"Idempotency-Key": f"must be 1 to {KEY_MAX} printable ASCII characters"},
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same": route and exact body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def decide(
    record: KeyRecord | None, request_fingerprint: str, now: datetime, lock_timeout: timedelta
) -> Decision:
    """Judge a request against the key's record; raise for the two refusals."""
    if record is None or record.expires_at <= now:
        return Decision.PROCEED
    if record.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with another request body or route"
        )
    if record.completed:
        return Decision.REPLAY
    if now - record.locked_at < lock_timeout:
        raise IdempotencyKeyInFlight(
            "a request with this Idempotency-Key is still being processed; retry later"
        )
    return Decision.TAKE_OVER
