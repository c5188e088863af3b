"""What a contact type costs: a one-time setup cost and a monthly fee, each fixed on the
contact when it is accepted (a later price change never reprices a contact)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from worker.domain.contacts import ContactType
from worker.domain.money import to_cents


def cost_cents(contact_type: ContactType, prices: Mapping[ContactType, Decimal]) -> int:
    """`contact_type`'s price in `prices` (setup costs or monthly fees), in cents."""
    return to_cents(prices[contact_type])
