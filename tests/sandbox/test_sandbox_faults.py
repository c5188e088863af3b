"""Fault injection: errors, latency, rate limits, timeouts and drop-after-commit."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sandbox_http import ACCOUNT, NUMBERS, USERS, buy, first_available, number_url, user_body

from sandbox.testing import SandboxControl


def test_error_rate_answers_provider_errors_without_doing_the_work(
    sandbox: SandboxControl, twilio: httpx.Client, google: httpx.Client
) -> None:
    phone = first_available(twilio)
    sandbox.set_faults(error_rate=1.0, error_status=503, seed=1)
    twilio_response = twilio.post(NUMBERS, data={"PhoneNumber": phone})
    assert twilio_response.status_code == 503
    assert twilio_response.json()["code"] == 20503
    google_response = google.post(USERS, json=user_body())
    assert google_response.status_code == 503
    assert google_response.json()["error"]["errors"][0]["reason"] == "backendError"

    sandbox.set_faults(error_status=500)
    assert twilio.post(NUMBERS, data={"PhoneNumber": phone}).json()["code"] == 20500
    sandbox.set_faults(error_status=None)
    assert twilio.get(NUMBERS).status_code in (500, 503)

    assert sandbox.resources() == {"phone_numbers": [], "users": [], "senders": []}


def test_faults_never_apply_to_control_routes(sandbox: SandboxControl) -> None:
    sandbox.set_faults(error_rate=1.0, latency_ms=2000, timeout_rate=1.0, rate_limit_per_s=0.001)
    started = time.monotonic()
    for _ in range(5):
        sandbox.resources()
        sandbox.stats()
    assert time.monotonic() - started < 1.0
    assert sandbox.stats()["requests"] == 0


def test_latency_delays_requests_without_blocking_others(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    sandbox.set_faults(latency_ms=300)

    def timed_get(_: int) -> float:
        started = time.monotonic()
        with httpx.Client(base_url=sandbox.url, auth=(ACCOUNT, "t")) as client:
            assert client.get(NUMBERS).status_code == 200
        return time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        durations = list(pool.map(timed_get, range(8)))
    assert min(durations) >= 0.3
    # Serially this takes at least 8 x 300 ms = 2.4 s; concurrently about 0.3 s plus overhead
    # (generous, for a loaded machine).
    assert time.monotonic() - started < 1.8


def test_rate_limit_answers_each_providers_rate_limit_error(
    sandbox: SandboxControl, twilio: httpx.Client, google: httpx.Client
) -> None:
    sandbox.set_faults(rate_limit_per_s=2)
    statuses = [twilio.get(NUMBERS).status_code for _ in range(2)]
    assert statuses == [200, 200]
    limited = twilio.get(NUMBERS)
    assert limited.status_code == 429
    assert limited.json()["code"] == 20429
    assert int(limited.headers["Retry-After"]) >= 1

    google_limited = google.get(f"{USERS}/someone@example.com")
    assert google_limited.status_code == 403
    assert google_limited.json()["error"]["errors"][0]["reason"] == "userRateLimitExceeded"
    assert int(google_limited.headers["Retry-After"]) >= 1

    time.sleep(0.6)  # one token back at 2/s
    assert twilio.get(NUMBERS).status_code == 200
    sandbox.set_faults(rate_limit_per_s=None)
    assert all(twilio.get(NUMBERS).status_code == 200 for _ in range(10))


def test_timeout_holds_the_request_and_does_no_work(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    phone = first_available(twilio)
    sandbox.set_faults(timeout_rate=1.0, timeout_hold_s=30)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        twilio.post(NUMBERS, data={"PhoneNumber": phone}, timeout=0.5)
    assert time.monotonic() - started < 2
    assert sandbox.resources()["phone_numbers"] == []

    sandbox.set_faults(timeout_hold_s=0.2)
    late = twilio.get(NUMBERS)
    assert late.status_code == 503 and late.json()["code"] == 20503
    assert sandbox.stats()["faults"]["timeout"] == 2


def test_drop_after_commit_disconnect_keeps_the_work(
    sandbox: SandboxControl, twilio: httpx.Client, google: httpx.Client
) -> None:
    phone = first_available(twilio)
    sandbox.set_faults(drop_after_commit_rate=1.0, drop_after_commit_mode="disconnect")
    with pytest.raises(httpx.RemoteProtocolError):
        twilio.post(NUMBERS, data={"PhoneNumber": phone, "FriendlyName": "c_1"})
    [number] = sandbox.resources()["phone_numbers"]
    assert number["address"] == phone and number["tag"] == "c_1"
    assert twilio.get(NUMBERS, params={"FriendlyName": "c_1"}).status_code == 200  # reads pass

    with pytest.raises(httpx.RemoteProtocolError):
        twilio.delete(number_url(number["id"]))
    assert sandbox.resources()["phone_numbers"] == []

    with pytest.raises(httpx.RemoteProtocolError):
        google.post(USERS, json=user_body())
    sandbox.set_faults(drop_after_commit_rate=0)
    assert google.post(USERS, json=user_body()).status_code == 409
    assert sandbox.stats()["faults"]["drop_disconnect"] == 3


def test_drop_after_commit_error_answers_500_after_the_work(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    phone = first_available(twilio)
    sandbox.set_faults(drop_after_commit_rate=1.0, drop_after_commit_mode="error")
    response = twilio.post(NUMBERS, data={"PhoneNumber": phone})
    assert response.status_code == 500 and response.json()["code"] == 20500
    assert [n["address"] for n in sandbox.resources()["phone_numbers"]] == [phone]


def test_drop_mode_random_uses_both_failures(sandbox: SandboxControl, twilio: httpx.Client) -> None:
    sandbox.set_faults(drop_after_commit_rate=1.0, seed=7)
    outcomes = set()
    for _ in range(12):
        try:
            outcomes.add(twilio.post(NUMBERS, data={"AreaCode": "201"}).status_code)
        except httpx.RemoteProtocolError:
            outcomes.add("dropped")
    assert outcomes == {500, "dropped"}
    assert len(sandbox.resources()["phone_numbers"]) == 12


def test_seed_makes_fault_sequences_repeatable(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    def run() -> list[int]:
        sandbox.reset()
        sandbox.set_faults(error_rate=0.5, seed=42)
        return [twilio.get(NUMBERS).status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert 200 in first and {500, 503} & set(first)


def test_faults_put_changes_only_what_it_is_given(sandbox: SandboxControl) -> None:
    sandbox.set_faults(latency_ms=5, sender_online_after_s=0.5)
    config = sandbox.set_faults(error_rate=0.25)
    assert config["latency_ms"] == 5 and config["error_rate"] == 0.25
    assert config["sender_online_after_s"] == 0.5 and config["timeout_hold_s"] == 60
    expected_keys = {
        "error_rate",
        "latency_ms",
        "rate_limit_per_s",
        "timeout_rate",
        "drop_after_commit_rate",
        "sender_online_after_s",
    }
    assert expected_keys <= set(config)
    for bad in ({"error_rate": 2}, {"latency_ms": -1}, {"unknown": 1}):
        response = httpx.put(f"{sandbox.url}/_sandbox/faults", json=bad)
        assert response.status_code == 422
    sandbox.reset()
    assert sandbox.faults()["latency_ms"] == 0


def test_buying_works_again_after_faults_are_cleared(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    sandbox.set_faults(error_rate=1.0)
    sandbox.set_faults(error_rate=0)
    assert buy(twilio)["sid"].startswith("PN")
