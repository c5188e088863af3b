"""Webhook rules: which URLs and addresses are refused, the schedule, the signature."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from support.webhooks import REFUSED_URLS

from worker.domain.webhooks import (
    RefusedTarget,
    address_refusal,
    attempts_allowed,
    check_addresses,
    new_secret,
    next_delay,
    parse_target,
    signed_headers,
)


def refusal(url: str) -> str | None:
    """Why the URL is refused with no DNS (literal addresses and form only), or None."""
    try:
        target = parse_target(url)
        if target.ip is not None:
            check_addresses([target.ip], allow_private=False)
    except RefusedTarget as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(("url", "reason"), sorted(REFUSED_URLS.items()))
def test_each_unsafe_url_is_refused_with_its_reason(url, reason):
    assert refusal(url) == reason


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/in?x=1", "http://93.184.216.34:8080/", "https://[2606:4700::1111]/"],
)
def test_public_urls_pass(url):
    assert refusal(url) is None


def test_target_keeps_the_name_for_host_header_and_defaults_the_port():
    target = parse_target("https://Hooks.Example.com/in/ü?x=1#frag")
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 443)
    assert target.path == "/in/%C3%BC?x=1"
    assert target.host_header == "hooks.example.com"
    assert parse_target("http://[2606:4700::1111]:8080/").host_header == "[2606:4700::1111]:8080"


@pytest.mark.parametrize("url", ["", "not a url", "http://", "http://exa mple.com/",
                                 "http://example.com:99999/", "http://-bad-.com/", 42, None])
def test_malformed_urls_are_refused_naming_the_field(url):
    with pytest.raises(RefusedTarget) as caught:
        parse_target(url)
    assert caught.value.code == "invalid_request"
    assert "url" in caught.value.fields


def test_every_resolved_address_must_be_public():
    public = ipaddress.ip_address("93.184.216.34")
    private = ipaddress.ip_address("10.1.2.3")
    check_addresses([public], allow_private=False)
    with pytest.raises(RefusedTarget, match="private"):
        check_addresses([public, private], allow_private=False)
    with pytest.raises(RefusedTarget) as caught:
        check_addresses([], allow_private=False)
    assert caught.value.reason == "unresolvable"


def test_allow_private_lifts_only_the_address_rule():
    check_addresses([ipaddress.ip_address("127.0.0.1")], allow_private=True)
    assert address_refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"
    with pytest.raises(RefusedTarget):
        parse_target("ftp://127.0.0.1/")  # the scheme rule does not depend on the setting


def test_schedule_gives_each_wait_then_stops():
    schedule = (5, 300, 1800)
    assert attempts_allowed(schedule) == 4
    assert [next_delay(schedule, n) for n in (1, 2, 3, 4)] == [5, 300, 1800, None]


def test_signature_verifies_with_the_reference_verifier_and_both_secrets_in_rotation():
    old, new = new_secret(), new_secret()
    assert old.startswith("whsec_") and old != new
    body = '{"type":"contact.active","timestamp":"2026-11-25T10:00:00Z","data":{"id":"ct_1"}}'
    now = datetime.now(UTC)
    headers = signed_headers("evt_1", now, body, [new, old])
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers)["data"]["id"] == "ct_1"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # the id is signed: no replay under another
        Webhook(new).verify(body, {**headers, "webhook-id": "evt_2"})
