"""TwilioSenders against the sandbox's Senders API emulation, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from worker.providers import (
    CREATING,
    NotFound,
    RateLimited,
    Retryable,
    Sender,
    TwilioNumbers,
    TwilioSenders,
    is_failed,
    is_online,
)
from worker.settings import Settings

Tagged = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]


@pytest.fixture
def phone(numbers: TwilioNumbers, tag: str) -> str:
    """A number bought and tagged for the test, as the pipeline does before registering it."""
    return numbers.ensure_number(tag, "US").phone_number


def wait_online(senders: TwilioSenders, sender: Sender, within_s: float = 5.0) -> Sender:
    deadline = time.monotonic() + within_s
    while not is_online(sender) and time.monotonic() < deadline:
        time.sleep(0.05)
        sender = senders.fetch(sender.sid)
    return sender


def test_create_fetch_find_delete(senders: TwilioSenders, sandbox: Any, phone: str) -> None:
    sandbox.set_faults(sender_online_after_s=0.2)
    created = senders.create(phone, "Assistant")
    assert created.sender_id == f"whatsapp:{phone}" and created.phone_number == phone
    assert created.status == CREATING and not is_online(created) and not is_failed(created)

    assert senders.fetch(created.sid).sid == created.sid
    assert senders.find_by_number(phone) == senders.fetch(created.sid)
    assert wait_online(senders, created).status == "ONLINE"

    senders.delete(created.sid)
    assert senders.find_by_number(phone) is None
    with pytest.raises(NotFound):
        senders.fetch(created.sid)
    with pytest.raises(NotFound):
        senders.delete(created.sid)


def test_sender_carries_the_tag_of_its_number(
    senders: TwilioSenders, sandbox: Any, phone: str, tag: str, with_tag: Tagged
) -> None:
    sender = senders.ensure_sender(phone)
    mine = with_tag(sandbox.resources()["senders"], tag)
    assert [r["address"] for r in mine] == [sender.sender_id]


def test_ensure_sender_adopts_the_existing_sender(
    senders: TwilioSenders, sandbox: Any, phone: str, tag: str, with_tag: Tagged
) -> None:
    first = senders.ensure_sender(phone, "Assistant")
    assert senders.ensure_sender(phone, "Assistant").sid == first.sid
    assert len(with_tag(sandbox.resources()["senders"], tag)) == 1


def test_delete_for_number_deletes_and_counts(
    senders: TwilioSenders, sandbox: Any, phone: str, tag: str, with_tag: Tagged
) -> None:
    senders.ensure_sender(phone)
    assert senders.delete_for_number(phone) == 1
    assert with_tag(sandbox.resources()["senders"], tag) == []
    assert senders.delete_for_number(phone) == 0


def test_drop_after_commit_then_retry_adopts_the_sender(
    senders: TwilioSenders, sandbox: Any, phone: str, tag: str, with_tag: Tagged
) -> None:
    sandbox.set_faults(drop_after_commit_rate=1)
    with pytest.raises(Retryable):
        senders.ensure_sender(phone)
    sandbox.set_faults(drop_after_commit_rate=0)
    adopted = senders.ensure_sender(phone)
    mine = with_tag(sandbox.resources()["senders"], tag)
    assert [r["address"] for r in mine] == [adopted.sender_id]


def test_provider_errors_are_retryable(senders: TwilioSenders, sandbox: Any, phone: str) -> None:
    sandbox.set_faults(error_rate=1)
    with pytest.raises(Retryable) as caught:
        senders.ensure_sender(phone)
    assert not isinstance(caught.value, RateLimited)


def test_timeouts_are_retryable(
    sandbox: Any, provider_settings: Callable[..., Settings], phone: str
) -> None:
    sandbox.set_faults(timeout_rate=1)
    settings = provider_settings(provider_read_timeout_s=0.3)
    with TwilioSenders.from_settings(settings) as client, pytest.raises(Retryable) as caught:
        client.find_by_number(phone)
    assert caught.value.code == "timeout"


def test_rate_limit_surfaces_retry_after(senders: TwilioSenders, sandbox: Any, phone: str) -> None:
    sandbox.set_faults(rate_limit_per_s=1)
    with pytest.raises(RateLimited) as caught:
        for _ in range(20):
            senders.find_by_number(phone)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 0
