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


def time_ms_of(value: str) -> int | None:
    """The millisecond time that `new_id` put into `value`, or None if it has no such shape."""
    prefix, _, body = value.rpartition("_")
    if not prefix or len(body) != 26 or not set(body) <= _ID_CHARS:
        return None
    ms = 0
    for char in body[:10]:  # 130 bits in 26 characters: 2 zero bits, then the 48-bit time
        ms = ms * 32 + _ALPHABET.index(char)
    return ms


def floor_id(prefix: str, ms: int) -> str:
    """The smallest id `new_id(prefix)` can make at millisecond `ms`: every id made at or
    after `ms` sorts after it."""
    value = max(ms, 0) << 80
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"
