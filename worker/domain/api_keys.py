"""API keys: how a key is made and how it is stored (hashed)."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "cp_"


def new_key() -> str:
    """A new clear API key: the prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(api_key: str) -> str:
    # Keys carry 256 random bits, so a fast unsalted hash is as safe as a slow one here and
    # lets the API look a key up by its hash in one indexed query.
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()
