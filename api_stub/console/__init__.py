"""The operators' console at `/console/`: server-rendered pages (Jinja2, autoescaped) over
`worker.app.console`, live through the outbox's event stream, on only while
`PROVISIONER_CONSOLE_TOKEN` is set.

Signing in with that token sets an HttpOnly, SameSite=Strict cookie naming a session that
expires and that signing out revokes (`sessions.py`); sign-in attempts are limited per client
address. `Authorization: Bearer <console token>` also works, for scripts. An account's API key
is not the token, so it never opens the console. Buttons are POST forms carrying the session's
CSRF token, checked for cookie sessions.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from api_stub import events, live
from api_stub.console.sessions import Sessions, SessionStoreUnavailable
from api_stub.errors import error_response
from api_stub.limits_mw import read_body
from api_stub.ratelimit import RateLimiter
from worker.app.console import Console
from worker.app.services import Services
from worker.domain.errors import DomainError
from worker.domain.ids import is_id
from worker.live import Notifier
from worker.redis_conn import RedisTarget
from worker.settings import Settings

HERE = Path(__file__).parent
STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
COOKIE = "console_session"
PREFIX = "/console"


class NotSignedIn(Exception):
    pass


class CsrfRejected(Exception):
    pass


class Gate:
    """Who may use the console: the token's holders, by session cookie or by bearer header."""

    def __init__(self, token: str, sessions: Sessions) -> None:
        self._token = token.encode()
        self.sessions = sessions

    def token_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def by_bearer(self, request: Request) -> bool:
        scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    async def session_of(self, request: Request) -> str | None:
        """The live session the request's cookie names (a Redis read, off the event loop)."""
        cookie = request.cookies.get(COOKIE, "")
        session_id = await run_in_threadpool(self.sessions.session_id, cookie) if cookie else None
        if session_id is not None:
            request.state.console_csrf = self.sessions.csrf(session_id)
        return session_id

    async def check(self, request: Request) -> None:
        if not (self.by_bearer(request) or await self.session_of(request)):
            raise NotSignedIn

    async def check_post(self, request: Request) -> tuple[dict[str, str], str | None]:
        """The form of a state-changing POST, after its CSRF token (cookie sessions only), and
        the session's id (None for a bearer request)."""
        form = await _form(request)
        if self.by_bearer(request):
            return form, None
        session_id = await self.session_of(request)
        if session_id is None:
            raise NotSignedIn
        if not hmac.compare_digest(form.get("csrf", ""), self.sessions.csrf(session_id)):
            raise CsrfRejected
        return form, session_id


async def _form(request: Request) -> dict[str, str]:
    body = await read_body(request, 16 * 1024)
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def install(app: FastAPI, *, settings: Settings, services: Services, waiters: live.Waiters) -> None:
    token = settings.console_token.get_secret_value()
    if not token:
        return  # the console is off: every /console path is a 404
    target = RedisTarget.from_settings(settings)
    redis_client = target.client(socket_timeout=1, socket_connect_timeout=1)
    gate = Gate(token, Sessions(token, redis_client, settings.console_session_s))
    # Sign-in attempts per client address (`limits`, on the same Redis as the API's limits).
    attempts = RateLimiter(target, settings.console_sign_in_limit, namespace="console-sign-in")
    console = Console(
        services.db,
        settings,
        services.publisher,
        services.webhooks,
        Notifier(target),
        redis_client,
    )
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        auto_reload=False,
    )

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        csrf = getattr(request.state, "console_csrf", "")  # a bearer request needs none
        html = templates.get_template(name).render(
            csrf=csrf, prefix=PREFIX, path=request.url.path, **context
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    async def view(request: Request, name: str, fn: Any, *args: Any, **context: Any) -> Response:
        await gate.check(request)
        data = await run_in_threadpool(fn, *args)
        if data is None:
            return page(request, "missing.html", 404, **context)
        return page(request, name, data=data, **context)

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, _: NotSignedIn) -> Response:
        if request.method == "GET" and request.url.path != f"{PREFIX}/events":
            return RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
        return error_response(401, "unauthenticated", "sign in to the console first")

    @app.exception_handler(SessionStoreUnavailable)
    async def _sessions_down(_: Request, __: SessionStoreUnavailable) -> Response:
        return error_response(
            503,
            "unavailable",
            "console sessions are kept in Redis, which is unavailable; retry later, or send "
            "Authorization: Bearer <console token>",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(CsrfRejected)
    async def _forbidden(_: Request, __: CsrfRejected) -> Response:
        return error_response(403, "forbidden", "missing or wrong CSRF token; reload the page")

    # --- signing in ----------------------------------------------------------------------

    async def signed_in(request: Request) -> Response:
        cookie = await run_in_threadpool(gate.sessions.start)
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=PREFIX,
            max_age=settings.console_session_s,
        )
        return response

    async def too_many_attempts(request: Request) -> Response | None:
        """A 429 once this client address has spent its sign-in attempts, else None."""
        client = request.client.host if request.client else "unknown"
        retry_after = await run_in_threadpool(attempts.check, client)
        if retry_after is None:
            return None
        response = page(
            request,
            "sign_in.html",
            429,
            error=f"Too many sign-in attempts; try again in {retry_after} s.",
        )
        response.headers["Retry-After"] = str(retry_after)
        return response

    @app.get(f"{PREFIX}/sign-in", include_in_schema=False)
    async def sign_in_form(request: Request) -> Response:
        # `?token=` is the link `make run` prints: it signs in and leaves the token out of
        # the address bar at once. It is an attempt like the form's.
        candidate = request.query_params.get("token")
        if candidate is not None:
            if (refused := await too_many_attempts(request)) is not None:
                return refused
            if gate.token_matches(candidate):
                return await signed_in(request)
        return page(request, "sign_in.html", error=None)

    @app.post(f"{PREFIX}/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        form = await _form(request)
        if (refused := await too_many_attempts(request)) is not None:
            return refused
        if not gate.token_matches(form.get("token", "")):
            return page(request, "sign_in.html", 401, error="That is not the console token.")
        return await signed_in(request)

    @app.post(f"{PREFIX}/sign-out", include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        _, session_id = await gate.check_post(request)
        if session_id is not None:
            await run_in_threadpool(gate.sessions.end, session_id)
        response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # --- pages ---------------------------------------------------------------------------

    @app.get(f"{PREFIX}/", include_in_schema=False)
    async def overview(request: Request) -> Response:
        return await view(request, "overview.html", console.overview)

    @app.get(f"{PREFIX}/batches", include_in_schema=False)
    async def batches(request: Request) -> Response:
        return await view(request, "batches.html", console.batches)

    @app.get(PREFIX + "/batches/{batch_id}", include_in_schema=False)
    async def batch(request: Request, batch_id: str) -> Response:
        await gate.check(request)
        if not is_id("bt", batch_id):
            return page(request, "missing.html", 404)
        return await view(request, "batch.html", console.batch, batch_id)

    @app.get(f"{PREFIX}/failed", include_in_schema=False)
    async def failed(request: Request) -> Response:
        return await view(request, "failed.html", console.failed, notice=None)

    @app.post(PREFIX + "/failed/{contact_id}/retry", include_in_schema=False)
    async def retry(request: Request, contact_id: str) -> Response:
        await gate.check_post(request)
        try:
            await run_in_threadpool(console.retry, contact_id)
        except DomainError as exc:
            data = await run_in_threadpool(console.failed)
            return page(request, "failed.html", 409, data=data, notice=exc.message)
        return RedirectResponse(f"{PREFIX}/failed", status_code=303)

    @app.get(f"{PREFIX}/deliveries", include_in_schema=False)
    async def deliveries(request: Request) -> Response:
        return await view(request, "deliveries.html", console.deliveries)

    @app.post(PREFIX + "/deliveries/{event_id}/redrive", include_in_schema=False)
    async def redrive(request: Request, event_id: str) -> Response:
        await gate.check_post(request)
        event_ids = await run_in_threadpool(console.redrive, event_id)
        publish = getattr(services.publisher, "deliver_webhooks", None)
        if event_ids and publish is not None:
            # After the commit; a lost publish is picked up by beat's relay after its grace.
            await run_in_threadpool(publish, event_ids)
        return RedirectResponse(f"{PREFIX}/deliveries", status_code=303)

    @app.get(f"{PREFIX}/accounts", include_in_schema=False)
    async def accounts(request: Request) -> Response:
        return await view(request, "accounts.html", console.accounts)

    @app.get(PREFIX + "/accounts/{account_id}", include_in_schema=False)
    async def account(request: Request, account_id: int) -> Response:
        return await view(request, "account.html", console.account, account_id)

    # --- live updates and assets ---------------------------------------------------------

    @app.get(f"{PREFIX}/events", include_in_schema=False)
    async def console_events(request: Request) -> Response:
        """Every account's events, framed as `GET /v0/events` frames one account's."""
        await gate.check(request)
        if gate.by_bearer(request):
            return events.stream_response(request, services.events, waiters, None)

        async def still_signed_in() -> bool:
            # A stream opened before sign-out (or expiry) ends with its session.
            try:
                return await gate.session_of(request) is not None
            except SessionStoreUnavailable:
                return True  # Redis down: no sign-out can happen either; keep streaming

        return events.stream_response(request, services.events, waiters, None, still_signed_in)

    @app.get(PREFIX + "/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = STATIC.get(name)
        if path is None:
            return error_response(404, "not_found", "no such file")
        return FileResponse(path, headers={"Cache-Control": "max-age=300"})
