"""A small typed client for the HTTP API, sync (`Client`) and async (`AsyncClient`), on httpx.

    from api_stub.client import Client, ContactExists

    with Client("http://127.0.0.1:8000", api_key) as api:
        contact = api.wait_for(api.create_contact(7, "phone", phone_country="US"), 60)

Both classes share one definition of every route: a pure function, on `_Api`, that returns the
`Call` to make (method, path, params, body, Idempotency-Key, how to read a success); only the
transport and the retry loop differ (`Client.send` blocks, `AsyncClient.send` awaits). The
contract's error bodies become one exception tree rooted at `ApiError`.
429, 5xx, `idempotency_key_in_flight` and connection errors are retried (tenacity), after the
server's `Retry-After` when it sends one, else with exponential backoff and jitter. Every POST
carries an `Idempotency-Key` (the caller's, or one generated per call), so a retried POST never
creates twice.
"""

from __future__ import annotations

import email.utils
import inspect
import re
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MethodType
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, overload

import httpx
import orjson
import tenacity
from pydantic import BaseModel, ConfigDict, TypeAdapter

T = TypeVar("T")
P = ParamSpec("P")

ContactStatus = Literal[
    "pending", "provisioning", "active", "grace_period", "deleting", "failed", "deleted"
]
# Where a contact rests: nothing is in flight for it (a grace period ends by itself only
# after days, by a billing pass).
TERMINAL = frozenset({"active", "grace_period", "failed", "deleted"})

# --- results -------------------------------------------------------------------------------


class _Model(BaseModel):
    # Fields the server adds later are ignored, so an older client keeps working.
    model_config = ConfigDict(frozen=True, extra="ignore")


class ErrorInfo(_Model):
    code: str
    message: str = ""
    fields: dict[str, str] | None = None


class Step(_Model):
    name: str
    status: str
    attempts: int


class Contact(_Model):
    id: str
    assistant_id: int
    contact_type: str
    status: ContactStatus
    address: str | None = None
    request: dict[str, Any] = {}
    setup_cost: Decimal
    monthly_cost: Decimal = Decimal(0)
    charged: bool
    billed_through: str | None = None
    grace_ends_at: datetime | None = None
    deleted_at: datetime | None = None
    deleted_reason: str | None = None
    error: ErrorInfo | None = None
    steps: list[Step] = []
    batch_id: str | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class Credits(_Model):
    balance: Decimal
    reserved: Decimal
    available: Decimal


class LedgerEntry(_Model):
    id: str
    kind: str  # top_up | reserve | capture | release | monthly_fee
    amount: Decimal  # signed: + credits in, - credits out
    contact_id: str | None = None
    month: str | None = None
    created_at: datetime


class BatchAccepted(_Model):
    index: int
    contact_id: str


class BatchRejected(_Model):
    index: int
    error: ErrorInfo


class Batch(_Model):
    """The answer to `create_batch`: which items became contacts, which were refused and why."""

    batch_id: str
    accepted: list[BatchAccepted]
    rejected: list[BatchRejected]
    replayed: bool = False  # the server answered from its Idempotency-Key record


class BatchStatus(_Model):
    batch_id: str
    total: int
    counts: dict[str, int]
    done: bool


# --- errors --------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer of the API: `{"error": {"code", "message", "fields"?}}`."""

    code = "api_error"

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.retry_after = retry_after


class Unauthenticated(ApiError):
    """No API key, or one the server does not know (401)."""

    code = "unauthenticated"


class NotFound(ApiError):
    """The assistant, contact or batch does not exist for this account (404)."""

    code = "not_found"


class InvalidRequest(ApiError):
    """The body breaks a rule; `fields` names each offending field (422)."""

    code = "invalid_request"


class RegulatoryBundleRequired(InvalidRequest):
    """The country and number type need a Twilio regulatory bundle the account lacks (422)."""

    code = "regulatory_bundle_required"


class RegulatoryAddressRequired(InvalidRequest):
    """The country and number type need an address the account lacks (422)."""

    code = "regulatory_address_required"


class InsufficientCredits(ApiError):
    """Available credits are below the setup cost (402)."""

    code = "insufficient_credits"


class ContactExists(ApiError):
    """The assistant already has a live contact of this type (409)."""

    code = "contact_exists"


class IdempotencyKeyReused(ApiError):
    """The Idempotency-Key was first used with another body or route (422)."""

    code = "idempotency_key_reused"


class IdempotencyKeyInFlight(ApiError):
    """The first request with this Idempotency-Key has not finished yet (409; retried)."""

    code = "idempotency_key_in_flight"


class PayloadTooLarge(ApiError):
    """The body is over the server's limit (413)."""

    code = "payload_too_large"


class RateLimited(ApiError):
    """Too many requests for this API key (429; retried after `retry_after`)."""

    code = "rate_limited"


class ServerError(ApiError):
    """A 5xx answer (retried)."""

    code = "server_error"


_BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (
        Unauthenticated,
        NotFound,
        InvalidRequest,
        RegulatoryBundleRequired,
        RegulatoryAddressRequired,
        InsufficientCredits,
        ContactExists,
        IdempotencyKeyReused,
        IdempotencyKeyInFlight,
        PayloadTooLarge,
        RateLimited,
    )
}


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> ApiError:
    """Translate an error answer into the exception of its code (or of its status)."""
    try:
        error = response.json()["error"]
        code, message, fields = (
            str(error["code"]),
            str(error.get("message", "")),
            error.get("fields"),
        )
    except (ValueError, KeyError, TypeError):
        code, message, fields = "", response.text[:200], None
    cls = _BY_CODE.get(code) or (ServerError if response.status_code >= 500 else ApiError)
    return cls(
        response.status_code,
        code or cls.code,
        message,
        fields if isinstance(fields, dict) else None,
        _retry_after(response.headers.get("retry-after")),
    )


# --- the shared core -----------------------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One route call, without I/O: the request to send and how to read its success."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: bytes | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


def _info(adapter: TypeAdapter[T]) -> Callable[[httpx.Response], T]:
    return lambda response: adapter.validate_python(response.json()["info"])


def _batch(response: httpx.Response) -> Batch:
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    return Batch.model_validate({**response.json()["info"], "replayed": replayed})


_CONTACT = _info(TypeAdapter(Contact))
_CONTACTS = _info(TypeAdapter(list[Contact]))
_CREDITS = _info(TypeAdapter(Credits))
_BATCH_STATUS = _info(TypeAdapter(BatchStatus))
_LEDGER = _info(TypeAdapter(list[LedgerEntry]))


def _post(path: str, parse: Callable[[httpx.Response], T], body: Any, key: str | None) -> Call[T]:
    # Exact bytes matter: the server fingerprints the body of an Idempotency-Key. Every POST
    # carries a key (the caller's, or a fresh one), so a retry of it never creates twice.
    return Call("POST", path, parse, orjson.dumps(body), idempotency_key=key or _new_key())


def _new_key() -> str:
    return f"cp-{uuid.uuid4().hex}"


def _page(limit: int, starting_after: str | None) -> dict[str, Any]:
    after = {} if starting_after is None else {"starting_after": starting_after}
    return {"limit": limit, **after}


def contact_body(contact_type: str, **fields: str | None) -> dict[str, Any]:
    """A contact request body: the type and the fields given (None left out)."""
    return {"contact_type": contact_type, **{k: v for k, v in fields.items() if v is not None}}


_RETRYABLE = (RateLimited, ServerError, IdempotencyKeyInFlight, httpx.TransportError)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _RETRYABLE)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a call again: at most `attempts` tries within `max_total_s`; waits follow
    `Retry-After` (capped at `max_wait_s`), else exponential backoff with full jitter."""

    attempts: int = 8
    max_total_s: float = 120.0
    base_s: float = 0.2
    max_wait_s: float = 30.0

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait_s)
        return tenacity.wait_random_exponential(multiplier=self.base_s, max=self.max_wait_s)(state)

    def kwargs(self) -> dict[str, Any]:
        return {
            "stop": tenacity.stop_after_attempt(self.attempts)
            | tenacity.stop_after_delay(self.max_total_s),
            "wait": self._wait,
            "retry": tenacity.retry_if_exception(_retryable),
            "reraise": True,
        }


def _long_poll(
    contact: Contact, deadline: float, http: httpx.Client | httpx.AsyncClient
) -> Call[Contact]:
    """`GET` the contact with `?wait=` (what is left of the deadline, and less than the read
    timeout) and `?status=` its known status: the answer comes when that status changes."""
    read_timeout = http.timeout.read
    cap = 50.0 if read_timeout is None else max(min(read_timeout - 5.0, 50.0), 1.0)
    wait = max(0.0, min(deadline - time.monotonic(), cap))
    return Call(
        "GET",
        f"/v0/assistant/{contact.assistant_id}/contact/{contact.id}",
        _CONTACT,
        params={"wait": round(wait, 3), "status": contact.status},
    )


class _Route(Generic[P, T]):
    """A route, defined once by `build` (its arguments -> the `Call` to make). On a `Client` it
    is a method that sends the call and returns the result; on an `AsyncClient`, a coroutine
    method that does the same (each client's `send` holds its transport and retry loop)."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        def blocking(client: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return client.send(build(*args, **kwargs))

        async def awaiting(client: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return await client.send(build(*args, **kwargs))

        # What `help()` and `inspect` show: the builder's parameters, the call's result type.
        signature = inspect.signature(build)
        result = re.fullmatch(r"Call\[(.+)\]", str(build.__annotations__.get("return")))
        returns = result[1] if result else inspect.Signature.empty
        self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for method in blocking, awaiting:
            method.__name__ = build.__name__
            method.__doc__ = build.__doc__
            method.__annotations__ = {**build.__annotations__, "return": returns}
            method.__dict__["__signature__"] = signature.replace(
                parameters=[self_, *signature.parameters.values()], return_annotation=returns
            )
        self._blocking, self._awaiting = blocking, awaiting

    def __set_name__(self, owner: type, name: str) -> None:
        self._blocking.__qualname__ = f"Client.{name}"
        self._awaiting.__qualname__ = f"AsyncClient.{name}"

    @overload
    def __get__(self, client: Client, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, client: None, owner: type[Client]) -> Callable[Concatenate[Client, P], T]: ...
    @overload
    def __get__(
        self, client: None, owner: type[AsyncClient]
    ) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]: ...
    def __get__(self, client: _Api | None, owner: type) -> Callable[..., Any]:
        method = self._awaiting if issubclass(owner, AsyncClient) else self._blocking
        return method if client is None else MethodType(method, client)


class _Api:
    """Every route of the contract, each defined once for both clients, and what the clients
    share: the headers, the retry policy, and how a `Call` becomes a request and its answer a
    result or an `ApiError`. A new route is one more `@_Route` function here."""

    def __init__(self, api_key: str, retry: RetryPolicy | None) -> None:
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self.retry = retry or RetryPolicy()

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        headers = dict(self._headers)
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        return {
            "method": call.method,
            "url": call.path,
            "content": call.body,
            "params": call.params or None,
            "headers": headers,
        }

    @staticmethod
    def _answer(call: Call[T], response: httpx.Response) -> T:
        if response.is_success:
            return call.parse(response)
        raise error_from_response(response)

    # --- the routes: pure functions (no `self`) from arguments to the `Call` -------------------

    @_Route
    def create_contact(
        assistant_id: int,
        contact_type: str,
        *,
        phone_country: str | None = None,
        user_phone: str | None = None,
        email_local: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        user_whatsapp_number: str | None = None,
        idempotency_key: str | None = None,
        phone_number_type: str | None = None,
        whatsapp_sender: str | None = None,
    ) -> Call[Contact]:
        """Ask for a contact; it comes back `pending` and is provisioned in the background.
        `whatsapp_sender`: `dedicated` or `shared` (else the account's WABA decides)."""
        body = contact_body(
            contact_type,
            phone_country=phone_country,
            phone_number_type=phone_number_type,
            whatsapp_sender=whatsapp_sender,
            user_phone=user_phone,
            email_local=email_local,
            first_name=first_name,
            last_name=last_name,
            user_whatsapp_number=user_whatsapp_number,
        )
        return _post(f"/v0/assistant/{assistant_id}/contact", _CONTACT, body, idempotency_key)

    @_Route
    def get_contact(assistant_id: int, contact_id: str) -> Call[Contact]:
        return Call("GET", f"/v0/assistant/{assistant_id}/contact/{contact_id}", _CONTACT)

    @_Route
    def list_contacts(
        assistant_id: int, *, limit: int = 100, starting_after: str | None = None
    ) -> Call[list[Contact]]:
        params = _page(limit, starting_after)
        return Call("GET", f"/v0/assistant/{assistant_id}/contact", _CONTACTS, params=params)

    @_Route
    def delete_contact(assistant_id: int, contact_id: str) -> Call[Contact]:
        """Delete (or, still provisioning, cancel) a contact: it is `deleting` until a worker
        has released it, then `deleted`. A repeat, or a failed or deleted contact, answers the
        contact as it is."""
        return Call("DELETE", f"/v0/assistant/{assistant_id}/contact/{contact_id}", _CONTACT)

    @_Route
    def credits() -> Call[Credits]:
        return Call("GET", "/v0/credits", _CREDITS)

    @_Route
    def ledger(*, limit: int = 100, starting_after: str | None = None) -> Call[list[LedgerEntry]]:
        """A page of the credits' movements, newest first; pass the last id as
        `starting_after` for the page before it."""
        return Call("GET", "/v0/credits/ledger", _LEDGER, params=_page(limit, starting_after))

    @_Route
    def create_batch(
        items: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> Call[Batch]:
        """Ask for up to 1,000 contacts, each `{"assistant_id", "contact_type", ...}`."""
        body = {"items": [dict(item) for item in items]}
        return _post("/v0/contact/batch", _batch, body, idempotency_key)

    @_Route
    def get_batch(batch_id: str) -> Call[BatchStatus]:
        return Call("GET", f"/v0/contact/batch/{batch_id}", _BATCH_STATUS)

    @_Route
    def list_batch_contacts(
        batch_id: str, *, limit: int = 100, starting_after: str | None = None
    ) -> Call[list[Contact]]:
        """A page of the batch's contacts in id order; pass the last id as `starting_after`."""
        params = _page(limit, starting_after)
        return Call("GET", f"/v0/contact/batch/{batch_id}/contacts", _CONTACTS, params=params)


DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class Client(_Api):
    """The API, blocking. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, retry)
        self._http = httpx.Client(base_url=api_url, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        request = self._request(call)
        for attempt in tenacity.Retrying(**self.retry.kwargs()):
            with attempt:
                return self._answer(call, self._http.request(**request))
        raise AssertionError("unreachable")  # tenacity re-raises the last error

    def wait_for(self, contact: Contact, timeout: float) -> Contact:
        """The contact as soon as its status differs from `contact.status`, or as it is after
        `timeout` seconds: long polls, no sleeping loop."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.send(_long_poll(contact, deadline, self._http))
            if current.status != contact.status or time.monotonic() >= deadline:
                return current


class AsyncClient(_Api):
    """The API for asyncio code (e.g. a web app provisioning in the background)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, retry)
        self._http = httpx.AsyncClient(base_url=api_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        request = self._request(call)
        async for attempt in tenacity.AsyncRetrying(**self.retry.kwargs()):
            with attempt:
                return self._answer(call, await self._http.request(**request))
        raise AssertionError("unreachable")

    async def wait_for(self, contact: Contact, timeout: float) -> Contact:
        """As `Client.wait_for`, awaited."""
        deadline = time.monotonic() + timeout
        while True:
            current = await self.send(_long_poll(contact, deadline, self._http))
            if current.status != contact.status or time.monotonic() >= deadline:
                return current
