"""Provider calls counted by kind, and Twilio's per-account concurrency limit (error 20429)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sandbox_http import ACCOUNT, NUMBERS, SENDERS, USERS, available_url, buy, number_url, user_body

from sandbox.calls import call_kind
from sandbox.testing import SandboxControl

OTHER = "AC" + "b2" * 16


def test_calls_are_counted_by_provider_and_kind(
    sandbox: SandboxControl, twilio: httpx.Client, google: httpx.Client
) -> None:
    number = buy(twilio)  # a search, then a buy
    assert twilio.get(NUMBERS, params={"FriendlyName": "ct_x"}).status_code == 200
    assert twilio.get(number_url(number["sid"])).status_code == 200
    assert twilio.delete(number_url(number["sid"])).status_code == 204
    assert google.post(USERS, json=user_body()).status_code == 200
    assert google.get(USERS + "/ada@assistants.example.com").status_code == 200
    calls = sandbox.stats()["calls"]
    assert calls == {
        "twilio.search": 1,
        "twilio.buy": 1,
        "twilio.lookup": 1,
        "twilio.poll": 1,
        "twilio.delete": 1,
        "google.create": 1,
        "google.lookup": 1,
    }
    assert sum(calls.values()) == sandbox.stats()["requests"]
    sandbox.reset()
    assert sandbox.stats()["calls"] == {}


def test_every_emulated_route_has_a_kind() -> None:
    """Pure: the classifier names the calls the worker makes (one test of logic alone)."""
    base = f"/2010-04-01/Accounts/{ACCOUNT}"
    assert call_kind("GET", f"{base}/AvailablePhoneNumbers/GB/Mobile.json") == "twilio.search"
    assert call_kind("GET", f"{base}/AvailablePhoneNumbers/GB.json") == "twilio.countries"
    assert call_kind("GET", f"{base}/AvailablePhoneNumbers.json") == "twilio.countries"
    assert call_kind("POST", SENDERS) == "senders.create"
    assert call_kind("GET", SENDERS + "/XE123") == "senders.poll"
    assert call_kind("GET", SENDERS) == "senders.lookup"
    assert call_kind("DELETE", SENDERS + "/XE123") == "senders.delete"
    assert call_kind("POST", "/v1.0/users") == "graph.create"
    assert call_kind("GET", "/v1.0/users") == "graph.lookup"
    assert call_kind("POST", "/v1.0/users/u1/assignLicense") == "graph.license"
    assert call_kind("POST", "/tenant-1/oauth2/v2.0/token") == "oauth.token"
    assert call_kind("POST", "/token") == "oauth.token"
    assert call_kind("GET", "/v2/RegulatoryCompliance/Bundles/BU1") == "twilio.regulatory"
    assert call_kind("POST", f"{base}/Addresses.json") == "twilio.regulatory"
    assert call_kind("GET", f"{base}/Messages.json") == "twilio.messages"


def test_twilio_refuses_requests_over_the_accounts_concurrency_limit(
    sandbox: SandboxControl,
) -> None:
    """More than N requests in flight on one account: 429, code 20429, no Retry-After, and
    nothing done; another account's requests are not affected."""
    sandbox.set_faults(twilio_concurrency_limit=3, latency_ms=1500)
    barrier = threading.Barrier(6)

    def search(account: str) -> httpx.Response:
        with httpx.Client(base_url=sandbox.url, auth=(account, "t"), timeout=5) as client:
            barrier.wait()
            return client.get(available_url("US", account), params={"PageSize": 1})

    with ThreadPoolExecutor(max_workers=6) as pool:
        mine = [pool.submit(search, ACCOUNT) for _ in range(5)]
        theirs = pool.submit(search, OTHER)
        answers = [f.result() for f in mine]
        other = theirs.result()
    refused = [r for r in answers if r.status_code == 429]
    assert sorted(r.status_code for r in answers) == [200, 200, 200, 429, 429]
    for response in refused:
        assert response.json()["code"] == 20429
        assert "retry-after" not in response.headers
    assert other.status_code == 200
    stats = sandbox.stats()
    mine_stats = stats["twilio_concurrency"][ACCOUNT]
    assert mine_stats["peak"] == 3
    assert mine_stats["refused"] == 2
    assert mine_stats["in_flight"] == 0
    # Three requests of >= 1.5 s each were in flight.
    assert mine_stats["busy_s"] >= 3 * 1.5
    assert stats["twilio_concurrency"][OTHER]["refused"] == 0

    # Below the limit again, the account is served; a limit of null lifts it.
    with httpx.Client(base_url=sandbox.url, auth=(ACCOUNT, "t"), timeout=5) as client:
        assert client.get(available_url("US")).status_code == 200
    sandbox.set_faults(twilio_concurrency_limit=None)
    assert sandbox.faults()["twilio_concurrency_limit"] is None
