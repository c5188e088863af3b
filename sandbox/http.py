"""Small request helpers shared by the provider emulators: credentials, bodies, paging."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Request

from sandbox.faults import Faults
from sandbox.state import SandboxState


def sandbox_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def faults(request: Request) -> Faults:
    value: Faults = request.app.state.faults
    return value


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """(username, password) from an HTTP Basic `Authorization` header, if well-formed."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep:
        return None
    return username, password


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def form_fields(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as a dict (last value wins)."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(raw, keep_blank_values=True))


def with_query(path: str, params: list[tuple[str, str]]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def single_page(request: Request, key: str, items: list[Any], page_size: int) -> dict[str, Any]:
    """A 2010-API list answer that holds everything on its first page: `items` under `key`,
    with the paging fields Twilio sends (the page's own URI, no next page)."""
    path = request.url.path
    query = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("Page", "PageToken")
    ]
    return {
        key: items,
        "end": max(0, len(items) - 1),
        "first_page_uri": with_query(path, [*query, ("Page", "0")]),
        "next_page_uri": None,
        "page": 0,
        "page_size": page_size,
        "previous_page_uri": None,
        "start": 0,
        "uri": with_query(path, query),
    }


def parse_page_size(raw: str | None, default: int, maximum: int = 1000) -> int | None:
    """The PageSize query value, or None when it is not an integer in [1, maximum]."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= maximum else None


def parse_page(raw: str | None) -> int | None:
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def page_window(
    sids: list[str], page: int, page_size: int, page_token: str | None
) -> tuple[int, int]:
    """[start, end) of the requested page over `sids`, honouring Twilio-style page tokens.

    `PA<sid>` continues after that sid, `PB<sid>` goes back to the page before it; an
    unknown token falls back to the page index.
    """
    start = page * page_size
    if page_token and len(page_token) > 2:
        kind, sid = page_token[:2], page_token[2:]
        if sid in sids:
            pos = sids.index(sid)
            if kind == "PA":
                start = pos + 1
            elif kind == "PB":
                start = max(0, pos - page_size)
    return start, min(len(sids), start + page_size)
