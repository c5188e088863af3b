"""WhatsApp sender onboarding in the sandbox: WABAs and their sender limit, verification by a
code sent by SMS to the number, Twilio review, taken offline with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from sandbox_http import ACCOUNT, NUMBERS, SENDERS, buy, first_available

from sandbox.testing import SandboxControl

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
WABA = "209876543210987"


def create(twilio: httpx.Client, phone: str, waba: str = WABA) -> httpx.Response:
    body = {
        "sender_id": f"whatsapp:{phone}",
        "profile": {"name": "Assistant"},
        "configuration": {"waba_id": waba, "verification_method": "sms"},
    }
    return twilio.post(SENDERS, json=body)


def control(sandbox: SandboxControl, method: str, path: str, **body: Any) -> Any:
    response = httpx.request(method, f"{sandbox.url}/_sandbox{path}", json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def waba(sandbox: SandboxControl) -> str:
    control(sandbox, "PUT", f"/twilio/wabas/{WABA}", sender_limit=2)
    sandbox.set_faults(sender_online_after_s=0.2)
    return WABA


def status(twilio: httpx.Client, sid: str) -> str:
    value: str = twilio.get(f"{SENDERS}/{sid}").json()["status"]
    return value


def wait_status(twilio: httpx.Client, sid: str, wanted: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while status(twilio, sid) != wanted:
        assert time.monotonic() < deadline, f"never {wanted}: {status(twilio, sid)}"
        time.sleep(0.05)


def test_unknown_waba_is_refused_63101(twilio: httpx.Client) -> None:
    response = create(twilio, buy(twilio)["phone_number"], waba="111111111111111")
    assert response.status_code == 400 and response.json()["code"] == 63101


def test_a_waba_linked_to_another_account_is_refused(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    control(sandbox, "PUT", f"/twilio/wabas/{WABA}", account_sid="AC" + "ff" * 16)
    response = create(twilio, buy(twilio)["phone_number"])
    assert response.status_code == 400 and response.json()["code"] == 63101


def test_the_waba_sender_limit_refuses_the_next_sender(
    sandbox: SandboxControl, twilio: httpx.Client, waba: str
) -> None:
    sids = [create(twilio, buy(twilio)["phone_number"]).json()["sid"] for _ in range(2)]
    third = create(twilio, buy(twilio)["phone_number"])
    assert third.status_code == 400 and third.json()["code"] == 63104
    [row] = [w for w in control(sandbox, "GET", "/twilio/wabas") if w["waba_id"] == waba]
    assert row["senders"] == 2 and row["sender_limit"] == 2
    # A deleted sender frees its place.
    assert twilio.delete(f"{SENDERS}/{sids[0]}").status_code == 204
    assert create(twilio, buy(twilio)["phone_number"]).status_code == 202


def test_a_verified_sender_goes_pending_verifying_review_online(
    sandbox: SandboxControl, twilio: httpx.Client, waba: str
) -> None:
    control(
        sandbox,
        "PUT",
        "/twilio/senders/onboarding",
        verification_rate=1.0,
        verifying_s=0.2,
        review_s=0.3,
    )
    phone = buy(twilio)["phone_number"]
    sid = create(twilio, phone).json()["sid"]
    assert status(twilio, sid) == "CREATING"
    assert twilio.get(MESSAGES, params={"To": phone}).json()["messages"] == []
    wait_status(twilio, sid, "PENDING_VERIFICATION")
    [sms] = twilio.get(MESSAGES, params={"To": phone}).json()["messages"]
    assert sms["to"] == phone and sms["direction"] == "inbound"
    match = re.search(r"(\d{3})-(\d{3})", sms["body"])
    assert match is not None
    code = match.group(1) + match.group(2)
    wrong = "000000" if code != "000000" else "111111"
    refused = twilio.post(f"{SENDERS}/{sid}", json={"configuration": {"verification_code": wrong}})
    assert refused.status_code == 400 and refused.json()["code"] == 63100
    assert status(twilio, sid) == "PENDING_VERIFICATION"
    accepted = twilio.post(f"{SENDERS}/{sid}", json={"configuration": {"verification_code": code}})
    assert accepted.status_code == 202 and accepted.json()["status"] == "VERIFYING"
    wait_status(twilio, sid, "TWILIO_REVIEW")
    wait_status(twilio, sid, "ONLINE")
    again = twilio.post(f"{SENDERS}/{sid}", json={"configuration": {"verification_code": code}})
    assert again.status_code == 400  # not pending verification any more


def test_three_wrong_codes_take_the_sender_offline(
    sandbox: SandboxControl, twilio: httpx.Client, waba: str
) -> None:
    control(sandbox, "PUT", "/twilio/senders/onboarding", verification_rate=1.0)
    sid = create(twilio, buy(twilio)["phone_number"]).json()["sid"]
    wait_status(twilio, sid, "PENDING_VERIFICATION")
    for _ in range(3):
        twilio.post(f"{SENDERS}/{sid}", json={"configuration": {"verification_code": "x"}})
    fetched = twilio.get(f"{SENDERS}/{sid}").json()
    assert fetched["status"] == "OFFLINE"
    assert "verification failed" in fetched["offline_reasons"][0]["message"]


def test_the_offline_control_sets_the_reason(
    sandbox: SandboxControl, twilio: httpx.Client, waba: str
) -> None:
    sid = create(twilio, buy(twilio)["phone_number"]).json()["sid"]
    control(
        sandbox,
        "POST",
        f"/twilio/senders/{sid}/offline",
        code="63117",
        message="Display name rejected by Meta",
    )
    fetched = twilio.get(f"{SENDERS}/{sid}").json()
    assert fetched["status"] == "OFFLINE"
    assert fetched["offline_reasons"][0] == {
        "code": "63117",
        "message": "Display name rejected by Meta",
        "more_info": "https://www.twilio.com/docs/errors/63117",
    }


def test_without_verification_a_sender_goes_online_after_the_fault_delay(
    twilio: httpx.Client, waba: str
) -> None:
    sid = create(twilio, buy(twilio)["phone_number"]).json()["sid"]
    assert status(twilio, sid) == "CREATING"
    wait_status(twilio, sid, "ONLINE")


class _Inbox(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], dict[str, str]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, form))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def inbox() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Inbox)
    _Inbox.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sms"
    server.shutdown()


def test_the_code_is_posted_to_the_numbers_sms_url_signed(
    sandbox: SandboxControl, twilio: httpx.Client, waba: str, inbox: str
) -> None:
    control(sandbox, "PUT", "/twilio/senders/onboarding", verification_rate=1.0)
    phone = first_available(twilio)
    assert twilio.post(NUMBERS, data={"PhoneNumber": phone, "SmsUrl": inbox}).status_code == 201
    create(twilio, phone)
    deadline = time.monotonic() + 5
    while not _Inbox.received:
        assert time.monotonic() < deadline, "no SMS webhook"
        time.sleep(0.05)
    headers, form = _Inbox.received[0]
    assert form["To"] == phone and re.search(r"\d{3}-\d{3}", form["Body"])
    # Twilio's documented scheme: HMAC-SHA1 (auth token) of the URL + sorted name/value pairs.
    payload = inbox + "".join(k + form[k] for k in sorted(form))
    expected = hmac.new(b"token", payload.encode(), hashlib.sha1).digest()
    assert headers["x-twilio-signature"] == base64.b64encode(expected).decode()
    listed = httpx.get(f"{sandbox.url}/_sandbox/twilio/numbers/{phone}/messages").json()
    assert listed[0]["body"] == form["Body"]
