"""Money as `Decimal` at the edges and integer cents in storage; never float."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

CENT = Decimal("0.01")


def to_cents(amount: Decimal | str | int) -> int:
    """Whole cents of `amount`; refuses fractions of a cent instead of rounding them away."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"not an amount: {amount!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not an amount: {amount!r}")
    if value.quantize(CENT, rounding=ROUND_HALF_EVEN) != value:
        raise ValueError(f"more than two decimal places: {amount!r}")
    return int(value * 100)


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def format_amount(cents: int) -> str:
    """The decimal string the API shows for an amount, e.g. ``"12.50"``."""
    return str(from_cents(cents))
