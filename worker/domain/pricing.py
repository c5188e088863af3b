"""Setup cost per contact type, fixed on the contact when it is accepted."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from worker.domain.contacts import ContactType
from worker.domain.money import to_cents


def setup_cost_cents(contact_type: ContactType, prices: Mapping[ContactType, Decimal]) -> int:
    """The one-time cost of provisioning `contact_type`, in cents."""
    return to_cents(prices[contact_type])
