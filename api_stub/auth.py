"""The bearer header; who it names is worker.app.accounts' question."""

from __future__ import annotations

from worker.app.accounts import Unauthenticated


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing Authorization header; send 'Authorization: Bearer <key>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
    return token


__all__ = ["Unauthenticated", "bearer_token"]
