"""The HTTP API: thin routes over worker.app.contacts. Build it with `create_app(settings)`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from api_stub import batch, console, events, live, providers, regulatory, schemas, webhooks
from api_stub.accept import FastAccept
from api_stub.auth import Unauthenticated, bearer_token
from api_stub.errors import (
    AUTHENTICATED,
    JSONResponse,
    domain_error_response,
    error_response,
    error_schema,
    header,
)
from api_stub.limits_mw import BodySizeLimit, PayloadTooLarge, read_body, too_large_response
from api_stub.metrics import install as install_metrics
from api_stub.openapi import (
    CONTACT_BODY_SCHEMA,
    IDEMPOTENCY_KEY_PARAMETER,
    IDEMPOTENT_REPLAYED,
    document_bearer_auth,
)
from api_stub.ratelimit import RateLimited, RateLimiter
from worker import tracing
from worker.app.contacts import Publisher
from worker.app.gauges import read_figures
from worker.app.operations import stuck_counts
from worker.app.readiness import ProviderReadiness
from worker.app.services import Database, Services
from worker.domain.contacts import ContactStatus
from worker.domain.errors import DomainError, InvalidRequest
from worker.live import Notifier
from worker.redis_conn import RedisTarget
from worker.runtime.celery_app import CeleryPublisher, create_celery
from worker.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")
MAX_WAIT_S = 60
API_SWITCH_INTERVAL_S = 0.001
STATUSES = tuple(s.value for s in ContactStatus)


NOT_FOUND = error_schema("Assistant or contact not found (`not_found`)")
INVALID = error_schema("Invalid request (`invalid_request`, with `fields`)")
READ_ERRORS: dict[int | str, dict[str, Any]] = {**AUTHENTICATED, 404: NOT_FOUND, 422: INVALID}
POST_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    402: error_schema("Available credits below the setup cost (`insufficient_credits`)"),
    409: error_schema("`contact_exists` or `idempotency_key_in_flight`"),
    413: error_schema("Body over 64 KiB (`payload_too_large`)"),
    422: error_schema(
        "Invalid request (`invalid_request`, with `fields`) or `idempotency_key_reused`"
    ),
}
ACCEPTED_HEADERS: dict[str, Any] = {
    "Location": header("the new contact's URL"),
    "Idempotent-Replayed": IDEMPOTENT_REPLAYED,
}


def allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method of every route whose path matches the request's, for a 405's `Allow`."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)  # PARTIAL: the path matches, the method does not
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def serve_threads_promptly() -> None:
    """Hand the GIL on after 1 ms rather than CPython's 5 (`sys.setswitchinterval`).

    The event loop is busy with requests while the threads that accept, read and publish
    wait on the database and Redis; each of their answers waits for the loop to let the GIL
    go, up to the switch interval, and an acceptance waits for three or four of them.
    """
    sys.setswitchinterval(API_SWITCH_INTERVAL_S)


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    publisher: Publisher | None = None,
) -> FastAPI:
    target = RedisTarget.from_settings(settings)  # one URL, or a master behind Sentinel
    if publisher is None:
        publisher = CeleryPublisher(create_celery(settings, redis=target))
    services = Services.build(settings, publisher, db, notifier=Notifier(target))
    service, keys = services.contacts, services.accounts
    limiter = RateLimiter(target, settings.rate_limit)
    fast = FastAccept(service, limiter)
    readiness = ProviderReadiness(settings)
    redis_client = target.client(socket_timeout=1, socket_connect_timeout=1)
    waiters = live.Waiters(target)  # one status subscription for the process's long polls
    reads = live.SingleFlight()

    app = FastAPI(
        title="contact-provisioner",
        version="0.1.0",
        default_response_class=JSONResponse,
        description="Provision phone numbers, email accounts and WhatsApp senders for AI "
        "assistants, asynchronously.",
    )
    app.state.service = service
    app.state.db = services.db
    app.state.waiters = waiters

    def authorise(request: Request) -> int:
        """Authenticate the bearer key and count the request against its rate limit."""
        api_key = bearer_token(request.headers.get("authorization"))
        account_id = keys.account_for(api_key)
        retry_after = limiter.check(keys.rate_key(api_key))
        if retry_after is not None:
            raise RateLimited(retry_after)
        return account_id

    async def call(request: Request, fn: Callable[[int], T]) -> T:
        # One hop to the thread pool per request: authentication, rate limit and the
        # store work all run there, off the event loop.
        return await run_in_threadpool(lambda: fn(authorise(request)))

    # --- errors ------------------------------------------------------------------------------

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
        return error_response(
            401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(RateLimited)
    async def _limited(_: Request, exc: RateLimited) -> JSONResponse:
        return error_response(
            429,
            "rate_limited",
            "too many requests for this API key",
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(_: Request, exc: PayloadTooLarge) -> JSONResponse:
        return too_large_response(exc.max_bytes)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = {
            str(err["loc"][-1]) if err.get("loc") else "request": err.get("msg", "invalid")
            for err in exc.errors()
        }
        return error_response(422, "invalid_request", "invalid request parameters", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette's `Allow` names the methods of the first route that matched the path
            # only; RFC 9110 asks for every method the resource has.
            headers = {**(headers or {}), "Allow": allowed_methods(app, request.scope)}
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database_unavailable", error=type(exc.orig).__name__)
        return error_response(
            503,
            "unavailable",
            "the database is unavailable; retry later",
            headers={"Retry-After": "5"},
        )

    # --- health --------------------------------------------------------------------------------

    @app.get(
        "/healthz",
        tags=["health"],
        responses={200: schemas.ok(schemas.HealthResponse, "The process is up")},
    )
    async def healthz() -> JSONResponse:
        return JSONResponse({"info": {"status": "ok"}})

    @app.get(
        "/readyz",
        tags=["health"],
        responses={
            200: schemas.ok(
                schemas.ReadinessResponse,
                "The database and Redis answer (the providers' answers are reported only)",
            ),
            503: error_schema(
                "The database or Redis does not answer (`not_ready`; `fields` names each check)"
            ),
        },
    )
    async def readyz() -> JSONResponse:
        def check() -> dict[str, str]:
            status = {"database": services.database_status()}
            try:
                redis_client.ping()
                status["redis"] = "ok"
            except Exception as exc:
                status["redis"] = type(exc).__name__
            # The providers' last answers (cached): reported, never failed on.
            status.update(readiness.read())
            return status

        status = await run_in_threadpool(check)
        # Only what this process needs to answer: the API never calls a provider.
        failing = ", ".join(k for k in ("database", "redis") if status[k] != "ok")
        if not failing:
            return JSONResponse({"info": status})
        return error_response(503, "not_ready", f"unavailable: {failing}", fields=status)

    # --- contacts ------------------------------------------------------------------------------

    @app.post(
        "/v0/assistant/{assistant_id}/contact",
        status_code=202,
        tags=["contacts"],
        responses={
            202: schemas.ok(
                schemas.ContactResponse,
                "Accepted: the contact, pending; provisioning continues in the background",
                ACCEPTED_HEADERS,
            ),
            **POST_ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": CONTACT_BODY_SCHEMA}},
            },
            "parameters": [IDEMPOTENCY_KEY_PARAMETER],
        },
    )
    async def create_contact(assistant_id: int, request: Request) -> JSONResponse:
        """Accept a contact request; provisioning continues in the background."""
        body = await read_body(request, settings.max_body_bytes)
        path = f"/v0/assistant/{assistant_id}/contact"
        idempotency_key = request.headers.get("idempotency-key")
        api_key = bearer_token(request.headers.get("authorization"))
        account_id = keys.cached(api_key)
        if account_id is not None and idempotency_key is None:
            prepared = service.prepare(account_id, assistant_id, body, path)
            if prepared is not None:  # a plain request: on the loop, accepted in a group
                reply = await fast.submit(keys.rate_key(api_key), prepared)
                return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
        reply = await call(
            request,
            lambda account_id: service.submit(
                account_id,
                assistant_id,
                body,
                path=path,
                idempotency_key=idempotency_key,
            ),
        )
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    @app.get(
        "/v0/assistant/{assistant_id}/contact/{contact_id}",
        tags=["contacts"],
        responses={200: schemas.ok(schemas.ContactResponse, "The contact"), **READ_ERRORS},
    )
    async def get_contact(
        assistant_id: int,
        contact_id: str,
        request: Request,
        wait: float = Query(
            0, ge=0, le=MAX_WAIT_S, description="Long poll: seconds to wait for a change"
        ),
        status: str | None = Query(
            None,
            max_length=32,
            description="With `wait`: answer once the status differs from this one (default: "
            "the status on arrival)",
        ),
    ) -> JSONResponse:
        """The contact; with `wait`, as soon as its status changes (or after `wait` seconds)."""
        if status is not None and status not in STATUSES:
            raise InvalidRequest("unknown status", {"status": f"one of {', '.join(STATUSES)}"})
        if not wait:
            info = await call(
                request, lambda account_id: service.get(account_id, assistant_id, contact_id)
            )
            return JSONResponse({"info": info})
        with waiters.watch(("contact", contact_id)) as woken:
            await waiters.ready()
            account_id, info = await call(
                request,
                lambda account_id: (account_id, service.get(account_id, assistant_id, contact_id)),
            )
            expected = status or info["status"]
            info = await waiters.wait_until(
                woken,
                wait,
                lambda: reads.read(
                    (account_id, assistant_id, contact_id),
                    lambda: run_in_threadpool(service.get, account_id, assistant_id, contact_id),
                ),
                lambda value: value["status"] != expected,
                info,
            )
        return JSONResponse({"info": info})

    @app.get(
        "/v0/assistant/{assistant_id}/contact",
        tags=["contacts"],
        responses={
            200: schemas.ok(schemas.ContactListResponse, "The assistant's contacts, by id"),
            **READ_ERRORS,
        },
    )
    async def list_contacts(
        assistant_id: int,
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        starting_after: str | None = Query(None, max_length=64),
    ) -> JSONResponse:
        info = await call(
            request,
            lambda account_id: service.list(account_id, assistant_id, limit, starting_after),
        )
        return JSONResponse({"info": info})

    @app.delete(
        "/v0/assistant/{assistant_id}/contact/{contact_id}",
        status_code=202,
        tags=["contacts"],
        responses={
            202: schemas.ok(
                schemas.ContactResponse,
                "Accepted: the contact, `deleting`; a worker releases what it holds at the "
                "providers, then it is `deleted` (a repeat answers the same)",
            ),
            200: schemas.ok(schemas.ContactResponse, "Already `failed` or `deleted`: unchanged"),
            **READ_ERRORS,
        },
    )
    async def delete_contact(assistant_id: int, contact_id: str, request: Request) -> JSONResponse:
        """Delete a contact: release what it holds, then `deleted`; a contact still pending or
        provisioning is cancelled (nothing is charged)."""
        reply = await call(
            request,
            lambda account_id: services.lifecycle.delete(account_id, assistant_id, contact_id),
        )
        return JSONResponse(reply.body, status_code=reply.status)

    @app.get(
        "/v0/credits/ledger",
        tags=["credits"],
        responses={
            200: schemas.ok(schemas.LedgerResponse, "Every movement of the credits, newest first"),
            **AUTHENTICATED,
            422: INVALID,
        },
    )
    async def get_ledger(
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        starting_after: str | None = Query(None, max_length=64),
    ) -> JSONResponse:
        info = await call(
            request,
            lambda account_id: services.lifecycle.ledger(account_id, limit, starting_after),
        )
        return JSONResponse({"info": info})

    @app.get(
        "/v0/credits",
        tags=["credits"],
        responses={
            200: schemas.ok(schemas.CreditsResponse, "The account's credits"),
            **AUTHENTICATED,
        },
    )
    async def get_credits(request: Request) -> JSONResponse:
        return JSONResponse({"info": await call(request, service.credits)})

    webhooks.install(app, call=call, service=services.webhooks, settings=settings)
    batch.install(app, call=call, service=services.batches, settings=settings, waiters=waiters)
    events.install(app, call=call, feed=services.events, waiters=waiters)
    console.install(app, settings=settings, services=services, waiters=waiters)
    providers.install(app, call=call, service=services.connections, settings=settings)
    regulatory.install(app, call=call, service=services.regulatory, settings=settings)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        larger={batch.PATH: settings.max_batch_body_bytes},
    )
    # Last, so that its middleware is outermost: request ids and metrics for every answer.
    install_metrics(
        app,
        redis_client,
        lambda: stuck_counts(services.db),
        lambda: read_figures(services.db, settings.worker_dead_after_s),
        readiness.credentials_ok,
    )
    document_bearer_auth(app, public_paths={"/healthz", "/readyz", "/metrics"})
    tracing.instrument_app(app)  # a server span per request, when tracing is on
    return app


def app_from_environment() -> FastAPI:
    """The app on the settings of the environment: what each `provisioner api --workers N`
    worker process builds."""
    from worker.logging import configure
    from worker.production import refusal_line, refusals

    serve_threads_promptly()
    settings = Settings()
    found = refusals(settings)
    if found:  # `provisioner api` refused these already; this is a process it did not vet
        print(refusal_line(found), file=sys.stderr)
        raise SystemExit(2)
    configure(settings.log_format, settings.log_level)
    tracing.configure(settings, "api")
    return create_app(settings)
