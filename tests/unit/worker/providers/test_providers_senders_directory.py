"""TwilioSenders' and GoogleDirectory's own logic over a mock transport."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from worker.providers import (
    GoogleDirectory,
    Permanent,
    Retryable,
    Sender,
    StaticTokenSource,
    TwilioSenders,
    is_failed,
    is_online,
)


def sender(sid: str, number: str, status: str = "CREATING") -> dict:
    return {"sid": sid, "sender_id": f"whatsapp:{number}", "status": status}


@pytest.mark.parametrize(
    ("status", "online", "failed"),
    [
        ("CREATING", False, False),
        ("ONLINE", True, False),
        ("ONLINE:UPDATING", True, False),
        ("OFFLINE", False, True),
        ("PENDING_VERIFICATION", False, False),
        ("VERIFYING", False, False),
        ("TWILIO_REVIEW", False, False),
        ("SOMETHING_NEW", False, False),
    ],
)
def test_sender_status_decides_wait_or_fail(status: str, online: bool, failed: bool) -> None:
    s = Sender(sid="XE1", sender_id="whatsapp:+15550000001", status=status)
    assert (is_online(s), is_failed(s)) == (online, failed)


def test_find_by_number_follows_meta_paging_on_our_own_host(
    senders_client: Callable[..., TwilioSenders],
) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        assert request.url.params["Channel"] == "whatsapp"
        if request.url.params.get("Page", "0") == "0":
            meta = {
                "page": 0,
                "next_page_url": "https://messaging.twilio.com/v2/Channels/Senders"
                "?Channel=whatsapp&PageSize=1&Page=1&PageToken=PT1",
                "key": "senders",
            }
            return httpx.Response(
                200, json={"senders": [sender("XE1", "+15550000001")], "meta": meta}
            )
        meta = {"page": 1, "next_page_url": None, "key": "senders"}
        return httpx.Response(200, json={"senders": [sender("XE2", "+15550000002")], "meta": meta})

    found = senders_client(handler).find_by_number("+15550000002")
    assert found is not None and found.sid == "XE2"
    # The next page is asked of our configured base URL, never of the host the body names.
    assert [r.url.host for r in requests] == ["messaging.twilio.test"] * 2
    assert requests[1].url.params["PageToken"] == "PT1"


def test_create_sends_json_with_whatsapp_sender_id(
    senders_client: Callable[..., TwilioSenders],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=sender("XE1", "+15550000001"))

    created = senders_client(handler).create("+15550000001", "Assistant")
    assert created.status == "CREATING" and created.phone_number == "+15550000001"
    assert seen[0].url.path == "/v2/Channels/Senders"
    assert json.loads(seen[0].content) == {
        "sender_id": "whatsapp:+15550000001",
        "profile": {"name": "Assistant"},
    }


def test_create_without_a_name_uses_the_default_display_name(
    senders_client: Callable[..., TwilioSenders],
) -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json=sender("XE1", "+15550000001"))

    senders_client(handler).create("whatsapp:+15550000001")
    assert bodies[0]["profile"] == {"name": "Assistant"}  # WhatsApp requires a name
    assert bodies[0]["sender_id"] == "whatsapp:+15550000001"


def test_ensure_sender_adopts_on_conflict(senders_client: Callable[..., TwilioSenders]) -> None:
    state: dict[str, list] = {"senders": []}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"senders": state["senders"], "meta": {}})
        # A concurrent attempt created it between our lookup and our create.
        state["senders"] = [sender("XE7", "+15550000001")]
        return httpx.Response(409, json={"code": 20409, "message": "exists", "status": 409})

    assert senders_client(handler).ensure_sender("+15550000001").sid == "XE7"


# Google ----------------------------------------------------------------------------------


class RotatingTokens:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def token(self, *, refresh: bool = False) -> str:
        self.calls.append(refresh)
        return f"token-{len(self.calls)}"


def test_bearer_token_is_asked_for_on_every_request(
    directory_client: Callable[..., GoogleDirectory],
) -> None:
    source = RotatingTokens()
    auth_headers: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth_headers.append(request.headers["Authorization"])
        return httpx.Response(204)

    client = directory_client(handler, source)
    client.delete_user("a@example.com")
    client.delete_user("b@example.com")
    assert auth_headers == ["Bearer token-1", "Bearer token-2"]


def test_a_401_asks_once_for_a_fresh_token_and_retries(
    directory_client: Callable[..., GoogleDirectory],
    google_error_response: Callable[..., httpx.Response],
) -> None:
    source = RotatingTokens()
    auth_headers: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth_headers.append(request.headers["Authorization"])
        return google_error_response(401, "authError")

    with pytest.raises(Permanent) as caught:
        directory_client(handler, source).delete_user("a@example.com")
    assert caught.value.code == "auth_failed"
    assert auth_headers == ["Bearer token-1", "Bearer token-2"]
    assert source.calls == [False, True]


def test_a_static_token_is_not_retried_after_401(
    directory_client: Callable[..., GoogleDirectory],
    google_error_response: Callable[..., httpx.Response],
) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return google_error_response(401, "authError")

    with pytest.raises(Permanent):
        directory_client(handler).get_user("a@example.com")
    assert len(calls) == 1


def test_an_empty_static_token_sends_no_authorization_header(
    directory_client: Callable[..., GoogleDirectory],
) -> None:
    headers: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers)
        return httpx.Response(204)

    directory_client(handler, StaticTokenSource(SecretStr(""))).delete_user("a@example.com")
    assert "Authorization" not in headers[0]


def user_body(email: str, tag: str | None, user_id: str = "1001") -> dict:
    body: dict = {"kind": "admin#directory#user", "id": user_id, "primaryEmail": email}
    if tag is not None:
        body["externalIds"] = [{"type": "custom", "customType": "contact_id", "value": tag}]
    return body


def test_insert_user_sends_a_strong_password_and_our_tag(
    directory_client: Callable[..., GoogleDirectory],
) -> None:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        return httpx.Response(200, json=user_body(body["primaryEmail"], "c_1"))

    client = directory_client(handler)
    user = client.insert_user("a@example.com", "Ada", "Lovelace", "c_1")
    client.insert_user("a@example.com", "Ada", "Lovelace", "c_1")
    assert user.tag == "c_1" and user.primary_email == "a@example.com"
    body = sent[0]
    assert body["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert body["changePasswordAtNextLogin"] is True
    assert body["externalIds"] == [{"type": "custom", "customType": "contact_id", "value": "c_1"}]
    password = body["password"]
    assert len(password) >= 16 and password != sent[1]["password"]
    assert any(c.isdigit() for c in password) and any(c.isupper() for c in password)
    assert password not in repr(user)


@pytest.mark.parametrize(
    ("existing_tag", "adopted"), [("c_1", True), ("c_2", False), (None, False)]
)
def test_ensure_user_after_409_adopts_only_our_own_account(
    directory_client: Callable[..., GoogleDirectory],
    google_error_response: Callable[..., httpx.Response],
    existing_tag: str | None,
    adopted: bool,
) -> None:
    gets = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal gets
        if request.method == "GET":
            gets += 1
            if gets == 1:  # not there yet when we look...
                return google_error_response(404, "notFound")
            return httpx.Response(200, json=user_body("a@example.com", existing_tag))
        return google_error_response(409, "duplicate", "Entity already exists.")  # ...but now

    client = directory_client(handler)
    if adopted:
        assert client.ensure_user("a@example.com", "A", "B", "c_1").tag == "c_1"
    else:
        with pytest.raises(Permanent) as caught:
            client.ensure_user("a@example.com", "A", "B", "c_1")
        assert caught.value.code == "email_taken"


def test_ensure_user_409_not_yet_readable_is_retryable(
    directory_client: Callable[..., GoogleDirectory],
    google_error_response: Callable[..., httpx.Response],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return google_error_response(404, "notFound")
        return google_error_response(409, "duplicate")

    with pytest.raises(Retryable):
        directory_client(handler).ensure_user("a@example.com", "A", "B", "c_1")


def test_delete_tagged_leaves_someone_elses_account(
    directory_client: Callable[..., GoogleDirectory],
) -> None:
    deletes: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            deletes.append(request)
            return httpx.Response(204)
        return httpx.Response(200, json=user_body("a@example.com", "c_other"))

    assert directory_client(handler).delete_tagged("a@example.com", "c_1") is False
    assert deletes == []
