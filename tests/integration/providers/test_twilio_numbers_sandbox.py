"""TwilioNumbers against the sandbox's Twilio REST emulation, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import SecretStr

from worker.providers import (
    NotFound,
    Permanent,
    RateLimited,
    Retryable,
    TwilioNumbers,
    forward_voice_url,
)
from worker.providers.http import make_timeout
from worker.settings import Settings

FORWARD: str = Settings.model_fields["voice_forward_url"].default
Tagged = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]


def test_search_available_lists_e164_numbers(numbers: TwilioNumbers) -> None:
    found = numbers.search_available("US", limit=5)
    assert 1 <= len(found) <= 5
    assert all(n.startswith("+1") and n[1:].isdigit() for n in found)
    assert len(set(found)) == len(found)


def test_buy_find_update_release(
    numbers: TwilioNumbers, sandbox: Any, tag: str, with_tag: Tagged
) -> None:
    phone = numbers.search_available("US", limit=1)[0]
    bought = numbers.buy(phone, tag)
    assert (bought.phone_number, bought.friendly_name, bought.voice_url) == (phone, tag, None)
    assert [r["address"] for r in with_tag(sandbox.resources()["phone_numbers"], tag)] == [phone]

    assert numbers.find(friendly_name=tag) == [bought]
    assert numbers.find(phone_number=phone) == [bought]
    assert numbers.find(friendly_name=tag + "-nobody") == []

    url = forward_voice_url(FORWARD, "+14155550100")
    assert url is not None
    updated = numbers.update_voice_url(bought.sid, url)
    assert updated.voice_url == url
    assert numbers.find(friendly_name=tag)[0].voice_url == url

    numbers.release(bought.sid)
    assert with_tag(sandbox.resources()["phone_numbers"], tag) == []
    with pytest.raises(NotFound):
        numbers.release(bought.sid)


def test_ensure_number_is_idempotent_and_sets_forwarding(
    numbers: TwilioNumbers, sandbox: Any, tag: str, with_tag: Tagged
) -> None:
    url = forward_voice_url(FORWARD, "+14155550100")
    first = numbers.ensure_number(tag, "US", url)
    again = numbers.ensure_number(tag, "US", url)
    assert again == first and first.voice_url == url
    assert len(with_tag(sandbox.resources()["phone_numbers"], tag)) == 1


def test_ensure_number_adopts_and_fixes_voice_url(numbers: TwilioNumbers, tag: str) -> None:
    first = numbers.ensure_number(tag, "US", None)
    assert first.voice_url is None
    url = forward_voice_url(FORWARD, "+14155550199")
    adopted = numbers.ensure_number(tag, "US", url)
    assert adopted.sid == first.sid and adopted.voice_url == url


def test_release_tagged_releases_everything_with_the_tag(
    numbers: TwilioNumbers, sandbox: Any, tag: str, with_tag: Tagged
) -> None:
    numbers.ensure_number(tag, "US")
    assert numbers.release_tagged(tag) == 1
    assert with_tag(sandbox.resources()["phone_numbers"], tag) == []
    assert numbers.release_tagged(tag) == 0


def test_buying_a_number_sold_to_someone_else_is_number_unavailable(
    numbers: TwilioNumbers, tag: str
) -> None:
    phone = numbers.search_available("US", limit=1)[0]
    numbers.buy(phone, tag)
    with pytest.raises(Permanent) as caught:
        numbers.buy(phone, tag + "-other")
    assert caught.value.code == "number_unavailable"
    assert caught.value.provider_code == "21422"


def test_sold_out_country_is_no_numbers_available(
    numbers: TwilioNumbers, sandbox: Any, tag: str
) -> None:
    sandbox.reset(inventory_per_country=2)
    numbers.ensure_number(tag + "-a", "US")
    numbers.ensure_number(tag + "-b", "US")
    with pytest.raises(Permanent) as caught:
        numbers.ensure_number(tag, "US")
    assert caught.value.code == "no_numbers_available"


def test_provider_errors_are_retryable(numbers: TwilioNumbers, sandbox: Any, tag: str) -> None:
    sandbox.set_faults(error_rate=1)
    with pytest.raises(Retryable) as caught:
        numbers.ensure_number(tag, "US")
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.status in (500, 503)


def test_timeouts_are_retryable(
    sandbox: Any, provider_settings: Callable[..., Settings], tag: str
) -> None:
    sandbox.set_faults(timeout_rate=1)
    settings = provider_settings(provider_read_timeout_s=0.3)
    with TwilioNumbers.from_settings(settings) as client, pytest.raises(Retryable) as caught:
        client.find(friendly_name=tag)
    assert caught.value.code == "timeout"


def test_rate_limit_surfaces_retry_after(numbers: TwilioNumbers, sandbox: Any, tag: str) -> None:
    sandbox.set_faults(rate_limit_per_s=1)
    with pytest.raises(RateLimited) as caught:
        for _ in range(20):
            numbers.find(friendly_name=tag)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 0
    assert caught.value.status == 429


def test_wrong_credentials_are_auth_failed(
    sandbox: Any, provider_settings: Callable[..., Settings]
) -> None:
    settings = provider_settings()
    # Basic-auth user that is not the account in the URL: Twilio answers 401 (20003).
    with (
        TwilioNumbers(
            base_url=settings.twilio_api_url,
            account_sid=settings.twilio_account_sid,
            api_key_sid="SK" + "f" * 32,
            auth_token=SecretStr("not-the-secret"),
            timeout=make_timeout(1.0, 1.0),
        ) as client,
        pytest.raises(Permanent) as caught,
    ):
        client.search_available("US")
    assert caught.value.code == "auth_failed"
    assert "not-the-secret" not in str(caught.value)


def test_drop_after_commit_then_retry_adopts_the_number(
    numbers: TwilioNumbers, sandbox: Any, tag: str, with_tag: Tagged
) -> None:
    sandbox.set_faults(drop_after_commit_rate=1)
    with pytest.raises(Retryable):
        numbers.ensure_number(tag, "US")
    sandbox.set_faults(drop_after_commit_rate=0)
    adopted = numbers.ensure_number(tag, "US")
    mine = with_tag(sandbox.resources()["phone_numbers"], tag)
    assert [r["address"] for r in mine] == [adopted.phone_number]


def test_concurrent_ensure_number_never_hands_out_one_number_twice(
    numbers: TwilioNumbers, sandbox: Any, tag: str, with_tag: Tagged
) -> None:
    tags = [f"{tag}-{i}" for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        got = list(pool.map(lambda t: numbers.ensure_number(t, "US"), tags))
    assert len({n.phone_number for n in got}) == 20
    assert [n.friendly_name for n in got] == tags
    phone_numbers = sandbox.resources()["phone_numbers"]
    for t, n in zip(tags, got, strict=True):
        assert [r["address"] for r in with_tag(phone_numbers, t)] == [n.phone_number]


def test_each_thread_has_its_own_pool_and_every_request_passes_the_hooks(
    numbers: TwilioNumbers,
) -> None:
    seen: list[str] = []
    numbers.on_request(lambda request: seen.append(request.url.path))
    with ThreadPoolExecutor(max_workers=4) as threads:
        found = list(threads.map(lambda _: numbers.search_available("US", limit=1), range(8)))
    assert all(len(f) == 1 for f in found)
    assert len(seen) == 8  # hooked, whichever thread's client sent it
    pools = numbers._clients  # one per thread that sent a request
    assert 1 <= len(pools) <= 4
    assert len({id(p) for p in pools}) == len(pools)
    numbers.close()
    assert all(p.is_closed for p in pools)
