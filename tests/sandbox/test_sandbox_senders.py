"""The Twilio Senders API (WhatsApp) emulation."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
from sandbox_http import ACCOUNT, DEFAULT_WABA, SENDERS, buy, number_url

from sandbox.testing import SandboxControl


def create(twilio: httpx.Client, phone: str, **extra: Any) -> httpx.Response:
    body = {
        "sender_id": f"whatsapp:{phone}",
        "profile": {"name": "Assistant"},
        "configuration": {"waba_id": DEFAULT_WABA},
        **extra,
    }
    return twilio.post(SENDERS, json=body)


def test_create_answers_202_creating(twilio: httpx.Client) -> None:
    phone = buy(twilio, FriendlyName="c_1")["phone_number"]
    webhook = {"callback_url": "https://example.com/wa", "callback_method": "POST"}
    response = create(twilio, phone, webhook=webhook)
    assert response.status_code == 202
    body = response.json()
    assert re.fullmatch(r"XE[0-9a-f]{32}", body["sid"])
    assert body["status"] == "CREATING"
    assert body["sender_id"] == f"whatsapp:{phone}"
    assert body["profile"]["name"] == "Assistant"
    assert body["webhook"]["callback_url"] == "https://example.com/wa"
    assert body["url"].endswith(f"{SENDERS}/{body['sid']}")


def test_status_goes_online_after_the_configured_delay(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    sandbox.set_faults(sender_online_after_s=0.3)
    sid = create(twilio, buy(twilio)["phone_number"]).json()["sid"]
    assert twilio.get(f"{SENDERS}/{sid}").json()["status"] == "CREATING"
    time.sleep(0.35)
    fetched = twilio.get(f"{SENDERS}/{sid}").json()
    assert fetched["status"] == "ONLINE"
    assert sandbox.resources()["senders"][0]["status"] == "ONLINE"


def test_list_envelope(sandbox: SandboxControl, twilio: httpx.Client) -> None:
    sids = [create(twilio, buy(twilio)["phone_number"]).json()["sid"] for _ in range(3)]
    first = twilio.get(SENDERS, params={"Channel": "whatsapp", "PageSize": 2}).json()
    assert [s["sid"] for s in first["senders"]] == sids[:2]
    meta = first["meta"]
    assert meta["key"] == "senders" and meta["page"] == 0 and meta["page_size"] == 2
    assert meta["previous_page_url"] is None and meta["next_page_url"]
    second = twilio.get(meta["next_page_url"]).json()
    assert [s["sid"] for s in second["senders"]] == sids[2:]
    assert second["meta"]["next_page_url"] is None
    assert twilio.get(SENDERS).status_code == 400  # Channel is required


def test_delete_answers_204_and_unknown_sids_404(twilio: httpx.Client) -> None:
    sid = create(twilio, buy(twilio)["phone_number"]).json()["sid"]
    assert twilio.delete(f"{SENDERS}/{sid}").status_code == 204
    for response in (twilio.get(f"{SENDERS}/{sid}"), twilio.delete(f"{SENDERS}/{sid}")):
        assert response.status_code == 404
        assert response.json()["code"] == 20404


def test_only_numbers_bought_by_the_account_can_become_senders(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    not_bought = create(twilio, "+14155550100")
    assert not_bought.status_code == 400 and not_bought.json()["code"] == 63100
    phone = buy(twilio)["phone_number"]
    with httpx.Client(base_url=sandbox.url, auth=("AC" + "d4" * 16, "t")) as other:
        assert create(other, phone).status_code == 400


def test_second_sender_for_a_number_is_a_conflict(twilio: httpx.Client) -> None:
    phone = buy(twilio)["phone_number"]
    assert create(twilio, phone).status_code == 202
    again = create(twilio, phone)
    assert again.status_code == 409 and again.json()["code"] == 20409


def test_validation_errors_are_63100(twilio: httpx.Client) -> None:
    phone = buy(twilio)["phone_number"]
    waba = {"waba_id": DEFAULT_WABA}
    bad_bodies: list[Any] = [
        {"sender_id": phone, "profile": {"name": "A"}, "configuration": waba},  # no prefix
        {"sender_id": f"whatsapp:{phone}", "configuration": waba},  # profile.name required
        {"sender_id": f"whatsapp:{phone}", "profile": {"name": ""}, "configuration": waba},
        {"sender_id": f"whatsapp:{phone}", "profile": {"name": "A"}},  # waba_id required
        ["not", "an", "object"],
    ]
    for body in bad_bodies:
        response = twilio.post(SENDERS, json=body)
        assert response.status_code == 400 and response.json()["code"] == 63100, body
    broken = twilio.post(SENDERS, content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["code"] == 63100


def test_sender_carries_its_numbers_tag(sandbox: SandboxControl, twilio: httpx.Client) -> None:
    phone = buy(twilio, FriendlyName="c_77")["phone_number"]
    create(twilio, phone)
    [sender] = sandbox.resources()["senders"]
    assert sender["address"] == f"whatsapp:{phone}"
    assert sender["tag"] == "c_77" and sender["status"] == "CREATING"


def test_releasing_the_number_takes_the_sender_offline(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    number = buy(twilio, FriendlyName="c_9")
    sid = create(twilio, number["phone_number"]).json()["sid"]
    assert twilio.delete(number_url(number["sid"])).status_code == 204
    fetched = twilio.get(f"{SENDERS}/{sid}").json()
    assert fetched["status"] == "OFFLINE" and fetched["offline_reasons"]
    [sender] = sandbox.resources()["senders"]
    assert sender["tag"] == "c_9"  # still traceable to its contact
    assert twilio.delete(f"{SENDERS}/{sid}").status_code == 204


def test_basic_auth_is_required(sandbox: SandboxControl) -> None:
    for auth in (None, (ACCOUNT, ""), ("", "token")):
        with httpx.Client(base_url=sandbox.url, auth=auth) as client:
            response = client.get(SENDERS, params={"Channel": "whatsapp"})
            assert response.status_code == 401 and response.json()["code"] == 20003
