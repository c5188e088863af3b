"""Provider rate budgets: which budgets a provider request draws on, and when to come back.

A budget is named `provider` (every request to it) or `provider.operation` (one kind of
request), with a rate in the `limits` notation: `PROVISIONER_PROVIDER_RATE_LIMITS` is e.g.
`"twilio=50/second;google=20/second;twilio.number_buy=5/second"`. A request draws one token
from each budget that names it. Work of a batch (the `bulk` class) may use only
`bulk_share` of each budget, so interactive requests always find tokens left while a large
batch runs.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$")
_PERIOD_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")


@dataclass(frozen=True)
class Rate:
    count: int
    period_s: int

    def scaled(self, share: float) -> Rate:
        """The rate times `share`, at least one request per period."""
        return Rate(max(1, math.floor(self.count * share)), self.period_s)


def parse_rate(text: str) -> Rate:
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate such as 50/second or 600/minute")
    count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or multiple < 1:
        raise ValueError(f"{text!r}: the count and the period must be positive")
    return Rate(count, multiple * _PERIOD_S[unit])


def parse_budgets(spec: str) -> dict[str, Rate]:
    """`"twilio=50/second;google.user_insert=10/second"` as {name: Rate}; ValueError if bad."""
    budgets: dict[str, Rate] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, rate = part.partition("=")
        name = name.strip().lower()
        if not sep or not _NAME.match(name):
            raise ValueError(
                f"{part.strip()!r} is not NAME=RATE with NAME a provider or provider.operation"
            )
        if name in budgets:
            raise ValueError(f"budget {name!r} is given twice")
        budgets[name] = parse_rate(rate)
    return budgets


def parse_caps(spec: str) -> dict[str, int]:
    """`"twilio=20;microsoft=4"` as {provider: requests in flight at most}; ValueError if bad.
    A cap holds for each connection separately (each Twilio account, each customer's tenant)."""
    caps: dict[str, int] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, count = part.partition("=")
        name = name.strip().lower()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{part.strip()!r} is not PROVIDER=COUNT, e.g. twilio=20")
        if name in caps:
            raise ValueError(f"cap {name!r} is given twice")
        try:
            value = int(count.strip())
        except ValueError:
            raise ValueError(f"{part.strip()!r}: the count must be a whole number") from None
        if value < 1:
            raise ValueError(f"{part.strip()!r}: the count must be at least 1")
        caps[name] = value
    return caps


def connection_key(name: str, connection: str) -> str:
    """The Redis identity of budget or cap `name` for one provider connection."""
    return f"{name}@{connection}"


# The operations of our provider requests, from their method and path.
_OPERATIONS: tuple[tuple[str, dict[str, str]], ...] = (
    ("/AvailablePhoneNumbers/", {"GET": "number_search"}),
    (
        "/IncomingPhoneNumbers",
        {"GET": "number_read", "POST": "number_buy", "DELETE": "number_delete"},
    ),
    (
        "/v2/Channels/Senders",
        {"GET": "sender_fetch", "POST": "sender_create", "DELETE": "sender_delete"},
    ),
    (
        "/admin/directory/v1/users",
        {"GET": "user_get", "POST": "user_insert", "PUT": "user_update", "DELETE": "user_delete"},
    ),
    # Microsoft Graph: the licence first (its path is under a user's).
    ("/assignLicense", {"POST": "license_assign"}),
    ("/v1.0/subscribedSkus", {"GET": "sku_read"}),
    ("/v1.0/users", {"GET": "user_get", "POST": "user_insert", "DELETE": "user_delete"}),
)


def operation_of(method: str, path: str) -> str:
    """The budget name of a request's operation, e.g. `number_buy` (POST IncomingPhoneNumbers:
    a purchase, or an update of one we own); the method in lower case for anything else."""
    method = method.upper()
    for marker, by_method in _OPERATIONS:
        if marker in path and method in by_method:
            return by_method[method]
    return method.lower()


@dataclass(frozen=True)
class Draw:
    """One token to take: from budget `key` (a Redis identity), at `rate`."""

    key: str
    rate: Rate


def draws_for(
    provider: str,
    operation: str,
    *,
    bulk: bool,
    budgets: Mapping[str, Rate],
    bulk_share: float,
) -> list[Draw]:
    """The tokens a request takes: one per budget that names it; for bulk work, first one
    from the bulk part of each (so a bulk request refused there costs the shared budget
    nothing)."""
    draws: list[Draw] = []
    for name in (provider, f"{provider}.{operation}"):
        rate = budgets.get(name)
        if rate is None:
            continue
        if bulk and bulk_share < 1:
            draws.insert(0, Draw(f"{name}:bulk", rate.scaled(bulk_share)))
        draws.append(Draw(name, rate))
    return draws


def come_back_in(wait_s: float, rate: Rate | None, rng: random.Random) -> float:
    """When a refused request should try again: after `wait_s` (when a token frees up or a
    pause ends), plus a random part so that work refused together does not all come back at
    the same instant. The random part is as long as the wait (a long wait means many are
    waiting), at least a second, and at most the budget's period."""
    wait_s = max(0.0, wait_s)
    spread = max(1.0, wait_s)
    if rate is not None:
        spread = min(spread, rate.period_s)
    return wait_s + rng.uniform(0.0, spread)
