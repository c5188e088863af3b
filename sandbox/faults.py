"""Fault injection and request statistics for provider routes.

`FaultMiddleware` wraps every request outside `/_sandbox`: it counts it, may add latency,
may refuse it like the provider's rate limiter would, may answer a provider-style 500/503
without doing the work, may hold it past any sane client timeout, and may do the work
and then answer 500 or drop the connection ("drop after commit", the case idempotency
exists for). Randomness comes from one `random.Random`, seeded through
`PUT /_sandbox/faults`, so tests are deterministic.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.calls import call_kind, twilio_account
from sandbox.errors import (
    concurrency_limited,
    is_provider_path,
    provider_for_path,
    rate_limited,
    server_error,
)

DropMode = Literal["random", "error", "disconnect"]
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class FaultConfig:
    """The fault settings; `PUT /_sandbox/faults` changes the fields it is given."""

    error_rate: float = 0.0
    latency_ms: float = 0.0
    rate_limit_per_s: float | None = None  # None or 0: unlimited
    timeout_rate: float = 0.0
    drop_after_commit_rate: float = 0.0
    sender_online_after_s: float = 2.0
    timeout_hold_s: float = 60.0
    seed: int | None = None
    # Which failure a drop-after-commit gives: a 500, a dropped connection, or either.
    drop_after_commit_mode: DropMode = "random"
    # Status for error_rate: 500, 503, or None for a random choice between them.
    error_status: int | None = None
    # Twilio's per-account concurrency limit: a request arriving while this many of the same
    # account's are in flight is refused, 429 with code 20429 (None or 0: unlimited).
    twilio_concurrency_limit: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    """What the middleware does with one request, decided at arrival under the lock."""

    latency_s: float = 0.0
    retry_after: int | None = None
    error_status: int | None = None
    timeout_s: float | None = None
    drop: Literal["error", "disconnect"] | None = None


class TokenBucket:
    """Refills `rate` tokens a second up to a burst of max(1, rate); one token a request."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> int | None:
        """None if a token was taken, else the seconds to wait (the Retry-After value)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


@dataclass
class InFlight:
    """One Twilio account's requests in flight: now, at most, and their summed seconds (the
    integral of in-flight over time, which over the cap times the wall time is the cap's
    utilisation)."""

    now: int = 0
    peak: int = 0
    busy_s: float = 0.0
    refused: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "in_flight": self.now,
            "peak": self.peak,
            "busy_s": round(self.busy_s, 6),
            "refused": self.refused,
        }


@dataclass
class Stats:
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    # `<provider>.<kind>` (sandbox.calls): every request that arrived, answered or refused.
    calls: Counter[str] = field(default_factory=Counter)
    twilio_accounts: dict[str, InFlight] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "faults": dict(self.faults),
            "calls": dict(self.calls),
            "twilio_concurrency": {k: v.as_dict() for k, v in self.twilio_accounts.items()},
        }


class Faults:
    """The fault configuration, its random generator, the rate bucket and the stats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._config = FaultConfig()
            self._rng = random.Random()
            self._bucket: TokenBucket | None = None
            self._stats = Stats()

    def config(self) -> FaultConfig:
        with self._lock:
            return FaultConfig(**self._config.as_dict())

    def update(self, changes: dict[str, Any]) -> FaultConfig:
        with self._lock:
            values = self._config.as_dict()
            values.update(changes)
            self._config = FaultConfig(**values)
            if "seed" in changes:
                self._rng = random.Random(changes["seed"])
            if "rate_limit_per_s" in changes:
                rate = self._config.rate_limit_per_s
                self._bucket = TokenBucket(rate) if rate else None
            return FaultConfig(**self._config.as_dict())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats.as_dict()

    def enter_twilio(self, account: str) -> bool:
        """Count a Twilio request in flight for `account`; False (and nothing counted in
        flight) when the account is at its concurrency limit."""
        with self._lock:
            flight = self._stats.twilio_accounts.setdefault(account, InFlight())
            limit = self._config.twilio_concurrency_limit
            if limit and flight.now >= limit:
                flight.refused += 1
                self._stats.faults["concurrency_limited"] += 1
                return False
            flight.now += 1
            flight.peak = max(flight.peak, flight.now)
            return True

    def leave_twilio(self, account: str, seconds: float) -> None:
        with self._lock:
            flight = self._stats.twilio_accounts[account]
            flight.now -= 1
            flight.busy_s += seconds

    def decide(self, method: str, path: str = "") -> Decision:
        with self._lock:
            cfg = self._config
            self._stats.requests += 1
            self._stats.calls[call_kind(method, path)] += 1
            decision = Decision(latency_s=max(0.0, cfg.latency_ms) / 1000.0)
            if self._bucket is not None:
                decision.retry_after = self._bucket.take()
                if decision.retry_after is not None:
                    self._stats.faults["rate_limited"] += 1
                    return decision
            if cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
                decision.error_status = cfg.error_status or self._rng.choice((500, 503))
                self._stats.faults["error"] += 1
                return decision
            if cfg.timeout_rate > 0 and self._rng.random() < cfg.timeout_rate:
                decision.timeout_s = cfg.timeout_hold_s
                self._stats.faults["timeout"] += 1
                return decision
            if (
                method in MUTATING_METHODS
                and cfg.drop_after_commit_rate > 0
                and self._rng.random() < cfg.drop_after_commit_rate
            ):
                mode = cfg.drop_after_commit_mode
                if mode == "random":
                    decision.drop = self._rng.choice(("error", "disconnect"))
                else:
                    decision.drop = mode
                self._stats.faults[f"drop_{decision.drop}"] += 1
            return decision

    def count_status(self, status: int) -> None:
        with self._lock:
            self._stats.by_status[str(status)] += 1


class DroppedConnection(Exception):
    """Raised after a partial response so that the server aborts the connection."""


class DropLogFilter(logging.Filter):
    """Keeps uvicorn from logging a traceback for every deliberate connection drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


class FaultMiddleware:
    """Pure ASGI middleware (never buffers unless a drop needs the finished response)."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_provider_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        provider = provider_for_path(scope["path"])
        decision = self.faults.decide(scope["method"], scope["path"])
        account = twilio_account(scope) if provider == "twilio" else None
        if account is None:
            await self._serve(scope, receive, send, provider, decision)
            return
        if not self.faults.enter_twilio(account):
            # Twilio: "An API Request that receives an error 429 response is never processed
            # and is always safe to retry" (its error 20429 page); no Retry-After is given.
            await concurrency_limited()(scope, receive, self._counting(send))
            return
        started = time.monotonic()
        try:
            await self._serve(scope, receive, send, provider, decision)
        finally:
            self.faults.leave_twilio(account, time.monotonic() - started)

    def _counting(self, send: Send) -> Send:
        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.faults.count_status(message["status"])
            await send(message)

        return counting_send

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, provider: Any, decision: Decision
    ) -> None:
        counting_send = self._counting(send)
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.retry_after is not None:
            await rate_limited(provider, decision.retry_after)(scope, receive, counting_send)
        elif decision.error_status is not None:
            await server_error(provider, decision.error_status)(scope, receive, counting_send)
        elif decision.timeout_s is not None:
            if await _hold(receive, decision.timeout_s):
                return  # the client gave up; nothing to answer
            await server_error(provider, 503)(scope, receive, counting_send)
        elif decision.drop == "error":
            await self.app(scope, receive, _discard)  # the work really happens
            await server_error(provider, 500)(scope, receive, counting_send)
        elif decision.drop == "disconnect":
            # Not counted in by_status: the client never receives a complete response.
            await self._drop_after_commit(scope, receive, send)
        else:
            await self.app(scope, receive, counting_send)

    async def _drop_after_commit(self, scope: Scope, receive: Receive, send: Send) -> None:
        messages: list[Message] = []

        async def buffer(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, buffer)  # the work really happens
        start = next(m for m in messages if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        # Promise more bytes than will ever come, send part of them, then abort: the client
        # sees an incomplete response whatever the real status was (even a bodiless 204).
        status = start["status"] if start["status"] not in (204, 304) else 200
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body) + 64).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        raise DroppedConnection(scope["path"])


async def _discard(message: Message) -> None:
    """An ASGI `send` that throws the response away."""


async def _hold(receive: Receive, seconds: float) -> bool:
    """Waits `seconds` or until the client disconnects; True if it disconnected."""

    async def wait_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    task = asyncio.ensure_future(wait_disconnect())
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
    return bool(done)
