"""TwilioSenders' onboarding calls against a MockTransport: the WABA in the create body, the
Senders API's own refusals classified, the verification code read from the Messages list and
submitted as an update."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr

from worker.providers import Permanent, TwilioSenders
from worker.providers.errors import SENDER_REJECTED, WABA_INVALID, WABA_SENDER_LIMIT
from worker.providers.http import make_timeout

Handler = Callable[[httpx.Request], httpx.Response]
ACCOUNT = "AC" + "0" * 32
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def client(handler: Handler, waba: str | None = "1040001") -> TwilioSenders:
    return TwilioSenders(
        base_url="https://messaging.twilio.test",
        api_url="https://api.twilio.test",
        account_sid=ACCOUNT,
        auth_token=SecretStr("token"),
        timeout=make_timeout(1.0, 1.0),
        transport=httpx.MockTransport(handler),
        default_waba_id=waba,
    )


def sender(status: str = "CREATING") -> dict[str, object]:
    return {"sid": "XE1", "sender_id": "whatsapp:+15550000001", "status": status}


def test_create_names_the_default_waba_unless_the_call_names_one() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(202, json=sender())

    senders = client(handler)
    senders.create("+15550000001")
    senders.create("+15550000001", waba_id="2050002")
    assert [b["configuration"]["waba_id"] for b in bodies] == ["1040001", "2050002"]
    client(handler, waba=None).create("+15550000001")
    assert "configuration" not in bodies[-1]  # Twilio then uses the account's linked WABA


@pytest.mark.parametrize(
    ("code", "ours"),
    [(63101, WABA_INVALID), (63104, WABA_SENDER_LIMIT), (63100, SENDER_REJECTED)],
)
def test_senders_refusals_are_classified_once(code: int, ours: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": code, "message": "refused", "status": 400})

    with pytest.raises(Permanent) as caught:
        client(handler).create("+15550000001")
    assert caught.value.code == ours and caught.value.provider_code == str(code)


def message(body: str, to: str = "+15550000001", at: datetime = NOW) -> dict[str, object]:
    sid = f"SM{abs(hash((body, at))):032x}"[:34]
    return {
        "sid": sid,
        "to": to,
        "body": body,
        "date_sent": format_datetime(at),
        "direction": "inbound",
    }


def test_received_code_reads_the_newest_code_sent_to_the_number_since_a_time() -> None:
    seen: list[httpx.Request] = []
    listed = [
        message("Hello there"),
        message("Your WhatsApp Business code 123-456. Don't share it.", at=NOW),
        message("Your WhatsApp Business code 999-999", at=NOW - timedelta(days=1)),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"messages": listed})

    senders = client(handler)
    assert senders.received_code("+15550000001", NOW - timedelta(minutes=5)) == (
        listed[1]["sid"],
        "123456",
    )
    assert seen[0].url.host == "api.twilio.test"
    assert seen[0].url.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert seen[0].url.params["To"] == "+15550000001"
    # Only an older code (a previous holder's of the number): none.
    listed[:] = [listed[2]]
    assert senders.received_code("+15550000001", NOW - timedelta(minutes=5)) is None


def test_submit_code_updates_the_sender_with_the_verification_code() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=sender("VERIFYING"))

    assert client(handler).submit_code("XE1", "123456").status == "VERIFYING"
    assert (seen[0].method, seen[0].url.path) == ("POST", "/v2/Channels/Senders/XE1")
    assert json.loads(seen[0].content) == {"configuration": {"verification_code": "123456"}}
