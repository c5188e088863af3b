"""The sandbox application: three provider emulators and the control endpoints on one base URL.

`create_app()` builds it; `serve()` runs it with uvicorn (one worker) and is what both
`python -m sandbox` and `provisioner sandbox` call. The sandbox shares no code with the
worker or the API on purpose: an emulator built from our own code would agree with us
by construction.
"""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox import controls, google, graph, identity, regulatory, senders, twilio
from sandbox.errors import method_not_allowed, not_found, provider_for_path
from sandbox.faults import DropLogFilter, FaultMiddleware, Faults
from sandbox.state import SandboxState

DEFAULT_INVENTORY = 10_000


def create_app(inventory_per_country: int = DEFAULT_INVENTORY) -> FastAPI:
    app = FastAPI(
        title="Provider sandbox",
        description=(
            "Twilio, Twilio Senders, Google Directory and Microsoft Graph emulators, and "
            "the token endpoints, for tests and dev."
        ),
        docs_url="/_sandbox/docs",
        redoc_url=None,
        openapi_url="/_sandbox/openapi.json",
    )
    app.state.default_inventory = inventory_per_country
    app.state.sandbox = SandboxState(inventory_per_country)
    app.state.faults = Faults()
    app.state.identity = identity.Identity()
    app.state.graph = graph.GraphState()
    app.state.regulatory = regulatory.RegulatoryState()
    app.include_router(twilio.router)
    app.include_router(regulatory.router)
    app.include_router(senders.router)
    app.include_router(google.router)
    app.include_router(graph.router)
    app.include_router(identity.router)  # last: its Microsoft paths start with a {tenant}
    app.include_router(controls.router)
    app.include_router(regulatory.controls)
    app.add_middleware(FaultMiddleware, faults=app.state.faults)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        provider = provider_for_path(request.url.path)
        if provider is not None and exc.status_code == 404:
            return not_found(provider, request.url.path)
        if provider is not None and exc.status_code == 405:
            return method_not_allowed(provider)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    return app


KEEP_ALIVE_S = 75


def serve(
    host: str = "127.0.0.1", port: int = 8900, inventory_per_country: int = DEFAULT_INVENTORY
) -> None:
    """Runs the sandbox until interrupted (blocking)."""
    logging.getLogger("uvicorn.error").addFilter(DropLogFilter())
    uvicorn.run(
        create_app(inventory_per_country),
        host=host,
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        # Twilio's and Google's edges keep an idle connection far longer than a client's pool
        # does (httpx: 5 s). uvicorn's 5 s default closed connections as clients reused them.
        timeout_keep_alive=KEEP_ALIVE_S,
        # Held requests (timeout faults) must not keep a stopping sandbox alive.
        timeout_graceful_shutdown=1,
    )
