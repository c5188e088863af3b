"""Encryption at rest of the provider credentials accounts connect (`/v0/providers/...`).

`SecretBox` seals a JSON object with the newest of `PROVISIONER_SECRET_KEYS` and opens what
any of them sealed (cryptography's MultiFernet: AES-128-CBC with HMAC-SHA256, authenticated),
so keys rotate: put a new key first, keep the old ones until `rotate` has resealed every row.
Without keys, one is made once under `var_dir` (the dev stack's way; never in production).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from worker.settings import Settings

KEY_FILE = "secret.key"


class SecretsUnreadable(Exception):
    """A sealed value that none of the configured keys opens (a key retired too early)."""


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        try:
            self._fernet = MultiFernet([Fernet(k.encode("ascii")) for k in keys])
        except (ValueError, UnicodeEncodeError) as exc:
            # Fernet's message never contains the key.
            raise ValueError(
                "PROVISIONER_SECRET_KEYS: each key must be 32 url-safe base64-encoded bytes "
                "(make one with `provisioner secrets new-key`)"
            ) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        raw = settings.secret_keys.get_secret_value()
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if not keys and settings.env == "production":
            # A key made here would be this process's alone: what it seals no other can open.
            raise ValueError("PROVISIONER_SECRET_KEYS is unset: production makes no key of its own")
        return cls(keys or [_local_key(settings.var_dir)])

    def seal(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(orjson.dumps(value)).decode("ascii")

    def open(self, sealed: str) -> dict[str, Any]:
        try:
            value = orjson.loads(self._fernet.decrypt(sealed.encode("ascii")))
        except InvalidToken as exc:
            raise SecretsUnreadable("no configured secret key opens this value") from exc
        if not isinstance(value, dict):
            raise SecretsUnreadable("the sealed value is not an object")
        return value

    def rotate(self, sealed: str) -> str:
        """The value sealed again under the newest key."""
        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise SecretsUnreadable("no configured secret key opens this value") from exc


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def _local_key(var_dir: Path) -> str:
    """The key kept in `var_dir`, made (readable by its owner only) on first use."""
    path = var_dir / KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    var_dir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
