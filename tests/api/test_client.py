"""The typed API client (api_stub/client.py), sync and async, against the real API over HTTP."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select
from support.services import serve_in_thread

from api_stub.app import create_app
from api_stub.client import (
    ApiError,
    AsyncClient,
    Client,
    ContactExists,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RegulatoryBundleRequired,
    RetryPolicy,
    ServerError,
    Unauthenticated,
)
from worker.store.models import Contact as ContactRow


@pytest.fixture
def api(api_url, tenant):
    with Client(api_url, tenant.api_key) as client:
        yield client


def contact_count(db) -> int:
    with db.read() as session:
        return session.execute(select(func.count()).select_from(ContactRow)).scalar_one()


def test_create_get_list_and_credits_are_typed(api, tenant):
    assistant = tenant.assistant_ids[0]
    contact = api.create_contact(assistant, "phone", phone_country="us", user_phone="+14155552671")
    assert contact.status == "pending" and contact.contact_type == "phone"
    assert contact.request == {"contact_type": "phone", "phone_country": "US",
                               "user_phone": "+14155552671",
                               "phone_number_type": "local"}
    assert contact.setup_cost == Decimal("1.00") and not contact.terminal
    assert api.get_contact(assistant, contact.id).id == contact.id
    assert [c.id for c in api.list_contacts(assistant)] == [contact.id]
    credits = api.credits()
    assert (credits.balance, credits.reserved, credits.available) == (
        Decimal("100.00"), Decimal("1.00"), Decimal("99.00"))


def test_contract_errors_are_exceptions_with_status_code_and_fields(api, api_url, make_tenant):
    poor = make_tenant(credits_cents=10)
    with Client(api_url, poor.api_key) as broke, pytest.raises(InsufficientCredits) as exc:
        broke.create_contact(poor.assistant_ids[0], "phone")
    assert exc.value.status == 402 and exc.value.code == "insufficient_credits"

    with pytest.raises(InvalidRequest) as exc:
        api.create_contact(1, "whatsapp", user_whatsapp_number="12")
    assert exc.value.status == 422 and "user_whatsapp_number" in exc.value.fields
    with pytest.raises(NotFound):
        api.get_contact(999_999, "ct_nope")
    with pytest.raises(PayloadTooLarge):
        api.create_contact(1, "email", email_local="a", first_name="x" * 70_000, last_name="y")
    with Client(api_url, "not-a-key") as stranger, pytest.raises(Unauthenticated):
        stranger.credits()
    assert issubclass(ContactExists, ApiError)


def test_contact_exists_and_idempotency_key_reused(api, tenant):
    assistant = tenant.assistant_ids[0]
    first = api.create_contact(assistant, "email", email_local="ada", first_name="Ada",
                               last_name="Lovelace", idempotency_key="k-1")
    again = api.create_contact(assistant, "email", email_local="ada", first_name="Ada",
                               last_name="Lovelace", idempotency_key="k-1")
    assert again.id == first.id  # replayed
    with pytest.raises(ContactExists) as exc:
        api.create_contact(assistant, "email", email_local="bob", first_name="B", last_name="C")
    assert exc.value.status == 409
    with pytest.raises(IdempotencyKeyReused):
        api.create_contact(assistant, "phone", idempotency_key="k-1")


class LoseFirstAnswer(httpx.HTTPTransport):
    """Real HTTP, but the first answer is lost after the server has acted on the request."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.calls += 1
        if self.calls == 1:
            response.read()
            raise httpx.ReadError("connection reset", request=request)
        return response


def test_post_retried_after_a_lost_answer_creates_once(api_url, tenant, db):
    transport = LoseFirstAnswer()
    with Client(api_url, tenant.api_key, transport=transport,
                retry=RetryPolicy(base_s=0.01)) as api:
        contact = api.create_contact(tenant.assistant_ids[0], "phone")
    assert transport.calls == 2
    assert contact_count(db) == 1
    with db.read() as session:
        assert session.get(ContactRow, contact.id) is not None


class UnavailableOnce(httpx.HTTPTransport):
    """Answers the first request with a 503 and Retry-After, as a restarting server would."""

    def __init__(self, retry_after: str) -> None:
        super().__init__()
        self.retry_after = retry_after
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls == 1:
            return httpx.Response(
                503, headers={"Retry-After": self.retry_after},
                json={"error": {"code": "unavailable", "message": "restarting"}})
        return super().handle_request(request)


def test_server_error_is_retried_after_retry_after(api_url, tenant):
    transport = UnavailableOnce("1")
    started = time.monotonic()
    with Client(api_url, tenant.api_key, transport=transport) as api:
        api.credits()
    assert transport.calls == 2 and time.monotonic() - started >= 0.9
    with Client(api_url, tenant.api_key, transport=UnavailableOnce("0"),
                retry=RetryPolicy(attempts=1)) as api, pytest.raises(ServerError) as exc:
        api.credits()
    assert (exc.value.status, exc.value.code) == (503, "unavailable")


def test_rate_limited_requests_wait_for_retry_after_and_succeed(make_settings, db, tenant):
    settings = make_settings(rate_limit="3/second")
    with serve_in_thread(create_app(settings, db=db)) as url:
        with Client(url, tenant.api_key, retry=RetryPolicy(attempts=1)) as impatient:
            with pytest.raises(RateLimited) as exc:
                for _ in range(10):
                    impatient.credits()
            assert exc.value.status == 429 and exc.value.retry_after >= 1
        time.sleep(1.1)
        with Client(url, tenant.api_key) as api:
            started = time.monotonic()
            for _ in range(6):
                api.credits()
            assert time.monotonic() - started >= 0.9  # it waited for the window, not failed


def test_async_client_creates_and_reads(api_url, tenant):
    async def scenario():
        async with AsyncClient(api_url, tenant.api_key) as api:
            assistant = tenant.assistant_ids[0]
            contact = await api.create_contact(assistant, "whatsapp",
                                               user_whatsapp_number="+442071838750")
            fetched, listed, credits = await asyncio.gather(
                api.get_contact(assistant, contact.id), api.list_contacts(assistant),
                api.credits())
            with pytest.raises(ContactExists):
                await api.create_contact(assistant, "whatsapp",
                                         user_whatsapp_number="+442071838750")
            return contact, fetched, listed, credits

    contact, fetched, listed, credits = asyncio.run(scenario())
    assert fetched.id == contact.id and [c.id for c in listed] == [contact.id]
    assert credits.reserved == Decimal("2.00")


def test_batch_routes_are_typed_and_a_repeat_with_the_key_is_replayed(api_url, make_tenant):
    tenant = make_tenant(credits_cents=100, assistants=3)  # enough for one phone
    a, b, c = tenant.assistant_ids
    items = [
        {"assistant_id": a, "contact_type": "phone"},
        {"assistant_id": b, "contact_type": "phone", "phone_country": "ZZ"},
        {"assistant_id": c, "contact_type": "phone"},
    ]
    with Client(api_url, tenant.api_key) as api:
        batch = api.create_batch(items, idempotency_key="onboard-1")
        assert [x.index for x in batch.accepted] == [0] and not batch.replayed
        rejected = {x.index: x.error for x in batch.rejected}
        assert rejected[1].code == "invalid_request" and "phone_country" in rejected[1].fields
        assert rejected[2].code == "insufficient_credits"
        again = api.create_batch(items, idempotency_key="onboard-1")
        assert again.replayed and again.batch_id == batch.batch_id
        assert again.accepted == batch.accepted
        status = api.get_batch(batch.batch_id)
        assert (status.total, status.counts["pending"], status.done) == (1, 1, False)
        contact = api.get_contact(a, batch.accepted[0].contact_id)
        assert contact.batch_id == batch.batch_id
        listed = api.list_batch_contacts(batch.batch_id, limit=10)
        assert [(c.id, c.status) for c in listed] == [(contact.id, "pending")]
        with pytest.raises(NotFound):
            api.get_batch("bt_nope")


def test_async_client_batch_routes_and_errors_match_the_sync_client(api_url, make_tenant):
    tenant = make_tenant(credits_cents=100, assistants=3)  # enough for one phone
    a, b, c = tenant.assistant_ids
    items = [
        {"assistant_id": a, "contact_type": "phone"},
        {"assistant_id": b, "contact_type": "phone", "phone_country": "ZZ"},
        {"assistant_id": c, "contact_type": "phone"},
    ]

    async def scenario():
        async with AsyncClient(api_url, tenant.api_key) as api:
            batch = await api.create_batch(items, idempotency_key="onboard-async")
            assert [x.index for x in batch.accepted] == [0] and not batch.replayed
            rejected = {x.index: x.error for x in batch.rejected}
            assert rejected[1].code == "invalid_request" and "phone_country" in rejected[1].fields
            assert rejected[2].code == "insufficient_credits"
            again = await api.create_batch(items, idempotency_key="onboard-async")
            assert again.replayed and again.batch_id == batch.batch_id
            assert again.accepted == batch.accepted
            status = await api.get_batch(batch.batch_id)
            assert (status.total, status.counts["pending"], status.done) == (1, 1, False)
            contact = await api.get_contact(a, batch.accepted[0].contact_id)
            assert contact.batch_id == batch.batch_id
            listed = await api.list_batch_contacts(batch.batch_id, limit=10)
            assert [(x.id, x.status) for x in listed] == [(contact.id, "pending")]
            assert await api.list_batch_contacts(batch.batch_id, starting_after=contact.id) == []
            assert [x.id for x in await api.list_contacts(a, limit=1)] == [contact.id]
            with pytest.raises(NotFound):
                await api.get_batch("bt_nope")
            with pytest.raises(InsufficientCredits) as exc:
                await api.create_contact(c, "phone")
            assert exc.value.status == 402
            with pytest.raises(IdempotencyKeyReused):
                await api.create_batch(items[:1], idempotency_key="onboard-async")
            with pytest.raises(InvalidRequest) as exc:
                await api.create_contact(b, "whatsapp", user_whatsapp_number="12")
            assert exc.value.status == 422 and "user_whatsapp_number" in exc.value.fields
        async with AsyncClient(api_url, "not-a-key") as stranger:
            with pytest.raises(Unauthenticated):
                await stranger.credits()

    asyncio.run(scenario())


class AsyncLoseFirstAnswer(httpx.AsyncHTTPTransport):
    """LoseFirstAnswer for the async client."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.calls += 1
        if self.calls == 1:
            await response.aread()
            raise httpx.ReadError("connection reset", request=request)
        return response


class AsyncUnavailableOnce(httpx.AsyncHTTPTransport):
    """UnavailableOnce for the async client."""

    def __init__(self, retry_after: str) -> None:
        super().__init__()
        self.retry_after = retry_after
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls == 1:
            return httpx.Response(
                503, headers={"Retry-After": self.retry_after},
                json={"error": {"code": "unavailable", "message": "restarting"}})
        return await super().handle_async_request(request)


def test_async_client_retries_like_the_sync_client(api_url, tenant, db):
    lossy, unavailable = AsyncLoseFirstAnswer(), AsyncUnavailableOnce("1")

    async def scenario():
        async with AsyncClient(api_url, tenant.api_key, transport=lossy,
                               retry=RetryPolicy(base_s=0.01)) as api:
            contact = await api.create_contact(tenant.assistant_ids[0], "phone")
        started = time.monotonic()
        async with AsyncClient(api_url, tenant.api_key, transport=unavailable) as api:
            await api.credits()
        waited = time.monotonic() - started
        async with AsyncClient(api_url, tenant.api_key, transport=AsyncUnavailableOnce("0"),
                               retry=RetryPolicy(attempts=1)) as api:
            with pytest.raises(ServerError) as exc:
                await api.credits()
        return contact, waited, exc.value

    contact, waited, error = asyncio.run(scenario())
    assert lossy.calls == 2 and contact_count(db) == 1  # the retried POST created once
    with db.read() as session:
        assert session.get(ContactRow, contact.id) is not None
    assert unavailable.calls == 2 and waited >= 0.9
    assert (error.status, error.code) == (503, "unavailable")


def test_regulatory_refusals_are_typed_and_nothing_is_recorded(api, tenant, db):
    assistant = tenant.assistant_ids[0]
    with pytest.raises(RegulatoryBundleRequired) as refused:
        api.create_contact(assistant, "phone", phone_country="DE")
    assert refused.value.status == 422 and "phone_country" in refused.value.fields
    with pytest.raises(InvalidRequest) as wrong:
        api.create_contact(assistant, "phone", phone_country="US", phone_number_type="mobile")
    assert "phone_number_type" in wrong.value.fields
    assert contact_count(db) == 0
    assert api.credits().reserved == Decimal("0.00")
    toll_free = api.create_contact(assistant, "phone", phone_country="US",
                                   phone_number_type="toll_free")
    assert toll_free.request["phone_number_type"] == "toll_free"
