"""Refuse bodies over the limit before they are read into memory (Starlette has no limit).

A declared Content-Length over the limit is refused here without reading anything; a body
without one (chunked) is counted as it streams, by `read_body`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api_stub.errors import error_response


class PayloadTooLarge(Exception):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the body must be at most {max_bytes} bytes")
        self.max_bytes = max_bytes


def too_large_response(max_bytes: int):  # type: ignore[no-untyped-def]
    return error_response(413, "payload_too_large", f"the body must be at most {max_bytes} bytes")


class BodySizeLimit:
    """`max_bytes` for every route, but `larger[path]` for the exact paths given there."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self.larger.get(scope.get("path", ""), self.max_bytes)
            for name, value in scope.get("headers", []):
                if name == b"content-length":
                    declared = int(value) if value.isdigit() else 0
                    if declared > limit:
                        await too_large_response(limit)(scope, receive, send)
                        return
        await self.app(scope, receive, send)


async def read_body(request: Request, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)
