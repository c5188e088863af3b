"""The `/_sandbox` control endpoints: reset, stats, resources and webhook sinks."""

from __future__ import annotations

import httpx
from sandbox_http import NUMBERS, USERS, buy, user_body
from support.services import idle_connection_is_kept

from sandbox.testing import SandboxControl


def test_stats_count_provider_requests_by_status(
    sandbox: SandboxControl, twilio: httpx.Client, google: httpx.Client
) -> None:
    buy(twilio)  # one search (200) and one purchase (201)
    google.get(f"{USERS}/nobody@example.com")  # 404
    httpx.get(f"{sandbox.url}{NUMBERS}")  # 401, no credentials
    stats = sandbox.stats()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 1, "201": 1, "404": 1, "401": 1}
    sandbox.reset()
    assert sandbox.stats() == {
        "requests": 0,
        "by_status": {},
        "faults": {},
        "calls": {},
        "twilio_concurrency": {},
    }


def test_unknown_provider_paths_answer_in_the_providers_format(twilio: httpx.Client) -> None:
    twilio_404 = twilio.get("/2010-04-01/Accounts/AC1/Nothing.json")
    assert twilio_404.status_code == 404 and twilio_404.json()["code"] == 20404
    google_404 = twilio.get("/admin/directory/v1/groups")
    assert google_404.status_code == 404 and "error" in google_404.json()


def test_resources_list_every_resource_with_id_address_and_tag(
    sandbox: SandboxControl, twilio: httpx.Client, google: httpx.Client
) -> None:
    number = buy(twilio, FriendlyName="c_phone")
    twilio.post(
        "/v2/Channels/Senders",
        json={
            "sender_id": f"whatsapp:{number['phone_number']}",
            "profile": {"name": "A"},
            "configuration": {"waba_id": "100000000000001"},
        },
    )
    user = google.post(USERS, json=user_body()).json()
    resources = sandbox.resources()
    [phone] = resources["phone_numbers"]
    [sender] = resources["senders"]
    [account] = resources["users"]
    assert (phone["id"], phone["address"], phone["tag"]) == (
        number["sid"],
        number["phone_number"],
        "c_phone",
    )
    assert sender["address"] == f"whatsapp:{number['phone_number']}"
    assert sender["tag"] == "c_phone" and sender["status"] == "CREATING"
    assert (account["id"], account["address"], account["tag"]) == (
        user["id"],
        user["primaryEmail"],
        "c_123",
    )


def test_reset_clears_state_and_sets_the_inventory(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    buy(twilio)
    sandbox.sink("hooks")
    httpx.post(sandbox.sink_url("hooks"), content=b"x")
    assert sandbox.reset(inventory_per_country=3)["inventory_per_country"] == 3
    assert sandbox.resources()["phone_numbers"] == []
    assert sandbox.sink("hooks") == []
    offered = twilio.get(
        "/2010-04-01/Accounts/" + NUMBERS.split("/")[3] + "/AvailablePhoneNumbers/FR/Local.json"
    ).json()["available_phone_numbers"]
    assert len(offered) == 3
    assert sandbox.reset()["inventory_per_country"] == 10_000


def test_sink_records_raw_deliveries(sandbox: SandboxControl) -> None:
    body = b'{"type": "contact.active", "data": {"id": "c_1"}}'
    response = httpx.post(
        sandbox.sink_url("acme"),
        content=body,
        headers={"Content-Type": "application/json", "Webhook-Id": "msg_1"},
    )
    assert response.status_code == 200
    [delivery] = sandbox.sink("acme")
    assert delivery["body"] == body.decode()
    assert delivery["headers"]["webhook-id"] == "msg_1"
    assert delivery["headers"]["content-type"] == "application/json"
    assert delivery["received_at"].endswith("Z")
    assert sandbox.sink("other") == []


def test_sink_answers_the_status_it_was_given(sandbox: SandboxControl) -> None:
    sandbox.set_sink_status("flaky", 503)
    assert httpx.post(sandbox.sink_url("flaky"), content=b"1").status_code == 503
    sandbox.set_sink_status("flaky", 410)
    assert httpx.post(sandbox.sink_url("flaky"), content=b"2").status_code == 410
    assert [d["body"] for d in sandbox.sink("flaky")] == ["1", "2"]
    assert sandbox.stats()["requests"] == 0  # sinks are not provider traffic


def test_an_idle_connection_outlives_a_clients_pool_expiry(sandbox: SandboxControl) -> None:
    # uvicorn's 5 s default equals httpx's pool expiry: the control client reused a connection
    # as the sandbox closed it, and a test failed with ECONNRESET (CI, 2026-12-07).
    assert idle_connection_is_kept(sandbox.url, "/_sandbox/stats")
