"""Judging a batch of contact requests: each item alone, by the single route's rules, in order.

An item is refused for the first rule it breaks, in the single route's order: a malformed
`assistant_id` (422), an assistant that is not the account's (404), a bad body (422), a live
contact of that type already there or accepted earlier in the batch (409), and last the
credits (402). Credits are reserved by index: an item that no longer fits what the earlier
items left is refused while later, cheaper items may still fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.domain.contacts import ContactType
from worker.domain.errors import (
    ContactExists,
    DomainError,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
)
from worker.domain.money import format_amount
from worker.domain.validation import ContactRequest, validate_contact_request

MAX_ASSISTANT_ID = 2**63 - 1


@dataclass(frozen=True)
class Item:
    """One item as parsed: its assistant and request, or the error that refuses it already."""

    index: int
    assistant_id: int | None = None
    request: ContactRequest | None = None
    error: DomainError | None = None


@dataclass
class Verdicts:
    """What to accept (index, assistant, request, cost) and what is refused (index, error)."""

    accepted: list[tuple[int, int, ContactRequest, int]] = field(default_factory=list)
    rejected: list[tuple[int, DomainError]] = field(default_factory=list)

    @property
    def reserved_cents(self) -> int:
        return sum(cost for *_, cost in self.accepted)


def items_of(body: Any, max_items: int) -> list[Any]:
    """The raw items of a batch body, or InvalidRequest naming `items` (or `body`)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the body must be a JSON object", {"body": "must be a JSON object"})
    items = body.get("items")
    if not isinstance(items, list):
        raise InvalidRequest("items is required", {"items": "is required: a list of requests"})
    if not 1 <= len(items) <= max_items:
        raise InvalidRequest(
            f"a batch holds 1 to {max_items} items",
            {"items": f"must hold 1 to {max_items} items, got {len(items)}"},
        )
    return items


def parse_item(index: int, raw: Any) -> Item:
    """Check the item's shape and `assistant_id` and validate its body, without the store."""
    if not isinstance(raw, Mapping):
        return Item(
            index,
            error=InvalidRequest(
                "an item must be a JSON object", {"item": "must be a JSON object"}
            ),
        )
    assistant_id = raw.get("assistant_id")
    if assistant_id is None:
        error = InvalidRequest("assistant_id is required", {"assistant_id": "is required"})
        return Item(index, error=error)
    if (
        isinstance(assistant_id, bool)
        or not isinstance(assistant_id, int)
        or not 0 < assistant_id <= MAX_ASSISTANT_ID
    ):
        error = InvalidRequest(
            "assistant_id must be a positive integer",
            {"assistant_id": "must be a positive integer"},
        )
        return Item(index, error=error)
    try:
        return Item(index, assistant_id, validate_contact_request(raw))
    except DomainError as exc:
        return Item(index, assistant_id, error=exc)


def judge(
    items: Sequence[Item],
    *,
    owned: Iterable[int],
    live: Iterable[tuple[int, str]],
    available_cents: int,
    cost_of: Callable[[ContactType], int],
) -> Verdicts:
    """Decide every item, in index order, against the account's state as read under its lock.

    `owned`: the account's assistants among the items'; `live`: (assistant, contact type) pairs
    that already hold a live contact; `available_cents`: balance minus reserved.
    """
    owned_ids = set(owned)
    taken = set(live)
    left = available_cents
    verdicts = Verdicts()
    for item in items:
        if item.assistant_id is not None and item.assistant_id not in owned_ids:
            # An unknown assistant outranks a bad body (404 before 422), as on the single route.
            verdicts.rejected.append((item.index, NotFound(f"no assistant {item.assistant_id}")))
            continue
        if item.error is not None or item.request is None or item.assistant_id is None:
            verdicts.rejected.append((item.index, item.error or InvalidRequest("invalid item")))
            continue
        kind = item.request.contact_type
        if (item.assistant_id, kind.value) in taken:
            verdicts.rejected.append(
                (
                    item.index,
                    ContactExists(
                        f"assistant {item.assistant_id} already has a live {kind} contact"
                    ),
                )
            )
            continue
        cost = cost_of(kind)
        if cost > left:
            verdicts.rejected.append(
                (
                    item.index,
                    InsufficientCredits(
                        f"available credits are below the setup cost of {format_amount(cost)}"
                    ),
                )
            )
            continue
        left -= cost
        taken.add((item.assistant_id, kind.value))
        verdicts.accepted.append((item.index, item.assistant_id, item.request, cost))
    return verdicts


def error_body(error: DomainError) -> dict[str, Any]:
    """The contract's error object of a refused item."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    return body


# Where a batch's contacts wait in the `bulk` queue: by their place in their account's line
# (the account's contacts still waiting, then the batch's in order), in tiers four times longer
# each (the first 64, the next 192, the next 768, the rest), at the broker's priority steps
# (kombu's Redis transport: 0 is taken first, then 3, 6, 9). A batch that comes while another
# account's large one runs has its first contacts ahead of that one's tail, and its later ones
# beside that tail's own tier: a small batch is not queued behind all of a large one. The
# account's line, not the batch's own positions: a large onboarding sent as many batches (the
# CLI sends `batch_max_items` at a time) is one long line, its later batches behind other
# accounts' first contacts, not each starting again at the front.
PRIORITY_TIERS = ((64, 0), (256, 3), (1024, 6))
LAST_TIER_PRIORITY = 9
# Past this place in an account's line, every contact is in the last tier.
LINE_COUNTED = PRIORITY_TIERS[-1][0]


def queue_priority(position: int) -> int:
    """The broker priority of the contact at `position` of its account's line (0 first)."""
    for end, priority in PRIORITY_TIERS:
        if position < end:
            return priority
    return LAST_TIER_PRIORITY


def queue_priorities(waiting: int, count: int) -> list[int]:
    """The priorities of a batch's `count` contacts, in order, when `waiting` of its account's
    contacts are already queued ahead of them."""
    return [queue_priority(waiting + position) for position in range(count)]
