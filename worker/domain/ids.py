"""Identifiers: time-ordered, URL-safe, prefixed by what they name (`ct_...`, `bt_...`)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(prefix: str) -> str:
    """A ULID-shaped id (48-bit millisecond time + 80 random bits) behind `prefix_`."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(prefix: str, value: str) -> bool:
    """Whether `value` has the shape of an id made by `new_id(prefix)`; anything else (NUL
    bytes, a kilobyte of junk) need not reach the database to be known not to exist."""
    body = value.removeprefix(f"{prefix}_")
    return len(body) == 26 and len(value) == len(prefix) + 27 and set(body) <= _ID_CHARS


_ID_CHARS = frozenset(_ALPHABET)
