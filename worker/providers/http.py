"""What the three provider clients share: pooled `httpx.Client`s (one per worker thread),
Retry-After parsing, and the single place where httpx's transport errors become `Retryable`."""

from __future__ import annotations

import contextlib
import functools
import math
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx

from worker.metrics import provider_call
from worker.providers.errors import (
    CONNECTION_ERROR,
    INCOMPLETE_RESPONSE,
    TIMEOUT,
    Retryable,
)
from worker.settings import Settings

USER_AGENT = "contact-provisioner/0.1"
# Paged listings stop here even if the provider keeps handing out next pages.
MAX_PAGES = 200


def timeout_from_settings(settings: Settings) -> httpx.Timeout:
    """The connect/read timeouts every provider call uses (write and pool share the read one)."""
    return make_timeout(settings.provider_connect_timeout_s, settings.provider_read_timeout_s)


def make_timeout(connect_s: float, read_s: float) -> httpx.Timeout:
    """An explicit `httpx.Timeout`: `connect_s` to connect, `read_s` for everything else."""
    return httpx.Timeout(connect=connect_s, read=read_s, write=read_s, pool=read_s)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one certificate-verifying TLS context every provider client shares (what httpx
    builds by default: certifi's roots, or `SSL_CERT_FILE` / `SSL_CERT_DIR`). Building it
    reads the whole CA bundle, about 27 ms of CPU: once per client, and a client per worker
    thread, that was 3.5 s of a 128-thread worker's start."""
    return httpx.create_ssl_context(trust_env=True)


def build_client(
    *,
    base_url: str,
    timeout: httpx.Timeout,
    max_connections: int,
    auth: httpx.Auth | None = None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A pooled client that never follows redirects (a redirect from a provider API is a bug,
    and following one could carry our credentials to another host)."""
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        auth=auth,
        timeout=timeout,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        transport=transport,
        verify=tls_context(),
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP-date), or None
    when absent or unreadable. Never negative."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are always GMT
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


@contextlib.contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Turn httpx's request-level failures into `Retryable`: the request may or may not have
    reached the provider, so the caller must retry through an idempotent step."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise Retryable(provider, TIMEOUT, f"{type(exc).__name__}: no answer in time") from exc
    except httpx.RemoteProtocolError as exc:
        # Most often the connection dropped mid-response.
        raise Retryable(
            provider, INCOMPLETE_RESPONSE, f"{type(exc).__name__}: incomplete response"
        ) from exc
    except httpx.TransportError as exc:
        raise Retryable(provider, CONNECTION_ERROR, f"{type(exc).__name__}: {exc}") from exc
    except httpx.DecodingError as exc:
        raise Retryable(
            provider, INCOMPLETE_RESPONSE, f"{type(exc).__name__}: undecodable response"
        ) from exc


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of an error body, or {} when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def relative_url(url: str) -> str:
    """Path and query of a provider-supplied next-page URL, so the request goes to our own
    base URL (and our credentials to no other host) whatever host the provider names."""
    return httpx.URL(url).raw_path.decode("ascii")


class Closing:
    """`with x:` closes `x` on exit; for anything that owns connection pools."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProviderClient(Closing):
    """Base of the provider clients: owns the pooled `httpx.Client`, sends requests through
    `transport_errors`, and hands every non-2xx response to the provider's one classifier."""

    provider: ClassVar[str]

    def __init__(
        self,
        *,
        base_url: str,
        timeout: httpx.Timeout,
        max_connections: int,
        auth: httpx.Auth | None,
        raise_for_status: Callable[[httpx.Response], None],
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._raise_for_status = raise_for_status
        self._options: dict[str, Any] = {
            "base_url": base_url,
            "timeout": timeout,
            "max_connections": max_connections,
            "auth": auth,
        }
        self._hooks: list[Callable[[httpx.Request], None]] = []
        self._guards: list[Callable[[str, str], AbstractContextManager[None]]] = []
        # Which provider connection the requests count against (a Twilio account, a
        # customer's tenant): the key of its shared budgets, caps and pauses.
        self.connection = "platform"
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        # A transport given (the tests' fault injectors) is one object: one client shares it.
        self._shared = (
            build_client(**self._options, transport=transport) if transport is not None else None
        )
        if self._shared is not None:
            self._clients.append(self._shared)

    @property
    def _http(self) -> httpx.Client:
        """This thread's client. A worker thread sends one request at a time, so a pool of
        its own holds one or two connections; one pool shared by all threads would make
        httpcore look over every idle connection of every thread (a poll() each) at each
        request, a cost that grows with the concurrency."""
        if self._shared is not None:
            return self._shared
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            options = {**self._options, "max_connections": min(2, self._options["max_connections"])}
            client = build_client(**options)
            with self._lock:
                client.event_hooks["request"] = list(self._hooks)
                self._clients.append(client)
            self._local.client = client
        return client

    def on_request(self, hook: Callable[[httpx.Request], None]) -> None:
        """Call `hook` before each request is sent; an exception it raises stops the request
        and reaches the caller as it is (the shared rate budgets use this)."""
        with self._lock:
            self._hooks.append(hook)
            for client in self._clients:
                client.event_hooks["request"] = [*client.event_hooks["request"], hook]

    def around_call(self, guard: Callable[[str, str], AbstractContextManager[None]]) -> None:
        """Run each request (from before it is sent to its classified answer) inside
        `guard(method, url)`: the shared concurrency caps hold a slot for its duration, and
        see a `RateLimited` answer as it leaves."""
        with self._lock:
            self._guards.append(guard)

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if not self._guards:
            return self._send(method, url, **kwargs)
        with ExitStack() as stack:
            for guard in self._guards:
                stack.enter_context(guard(method, url))
            return self._send(method, url, **kwargs)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            with transport_errors(self.provider):
                response = self._http.request(method, url, **kwargs)
        except Retryable as exc:
            provider_call(self.provider, "timeout" if exc.code == TIMEOUT else "error")
            raise
        provider_call(self.provider, response.status_code)
        if not response.is_success:
            self._raise_for_status(response)
        return response

    def _request_json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, url, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            # A 2xx whose body is not JSON is a truncated or mangled answer: try again.
            raise Retryable(
                self.provider, INCOMPLETE_RESPONSE, "unreadable response body", response.status_code
            ) from exc
        if not isinstance(body, dict):
            raise Retryable(
                self.provider,
                INCOMPLETE_RESPONSE,
                "response is not an object",
                response.status_code,
            )
        return body

    def _pages(
        self,
        url: str,
        params: dict[str, Any],
        next_url: Callable[[dict[str, Any]], str | None],
    ) -> Iterator[dict[str, Any]]:
        """Every page of a listing; `next_url` reads the next page's URL (which carries the
        query itself) from a page, or None on the last one."""
        page_url: str | None = url
        page_params: dict[str, Any] | None = params
        for _ in range(MAX_PAGES):
            if page_url is None:
                return
            body = self._request_json("GET", page_url, params=page_params)
            yield body
            following = next_url(body)
            page_url = relative_url(following) if following else None
            page_params = None

    def close(self) -> None:
        """Close the connection pools (every thread's)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
