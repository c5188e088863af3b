"""GoogleDirectory against the sandbox's Directory API emulation, over real HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from worker.providers import (
    GoogleDirectory,
    NotFound,
    Permanent,
    RateLimited,
    Retryable,
)
from worker.settings import Settings

Tagged = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]
DOMAIN = "assistants.example.com"


@pytest.fixture
def email(tag: str) -> str:
    return f"{tag.replace('_', '.')}@{DOMAIN}"


def test_insert_get_delete(
    directory: GoogleDirectory, sandbox: Any, email: str, tag: str, with_tag: Tagged
) -> None:
    user = directory.insert_user(email, "Ada", "Lovelace", tag)
    assert (user.primary_email, user.tag) == (email, tag)
    assert [r["address"] for r in with_tag(sandbox.resources()["users"], tag)] == [email]

    assert directory.get_user(email) == user
    assert directory.get_user(user.id) == user

    directory.delete_user(email)
    with pytest.raises(NotFound):
        directory.get_user(email)
    with pytest.raises(NotFound):
        directory.delete_user(email)
    assert with_tag(sandbox.resources()["users"], tag) == []


def test_ensure_user_is_idempotent(
    directory: GoogleDirectory, sandbox: Any, email: str, tag: str, with_tag: Tagged
) -> None:
    first = directory.ensure_user(email, "Ada", "Lovelace", tag)
    assert directory.ensure_user(email, "Ada", "Lovelace", tag) == first
    assert len(with_tag(sandbox.resources()["users"], tag)) == 1


def test_someone_elses_address_is_email_taken(
    directory: GoogleDirectory, email: str, tag: str
) -> None:
    directory.insert_user(email, "Grace", "Hopper", tag + "-other")
    with pytest.raises(Permanent) as caught:
        directory.ensure_user(email, "Ada", "Lovelace", tag)
    assert caught.value.code == "email_taken"
    with pytest.raises(Permanent) as caught:  # the 409 itself
        directory.insert_user(email, "Ada", "Lovelace", tag)
    assert caught.value.code == "email_taken"
    assert caught.value.status == 409


def test_delete_tagged_only_deletes_our_own_account(
    directory: GoogleDirectory, email: str, tag: str
) -> None:
    directory.insert_user(email, "Grace", "Hopper", tag + "-other")
    assert directory.delete_tagged(email, tag) is False
    assert directory.get_user(email).tag == tag + "-other"
    assert directory.delete_tagged(email, tag + "-other") is True
    assert directory.delete_tagged(email, tag + "-other") is False


def test_drop_after_commit_then_retry_adopts_the_user(
    directory: GoogleDirectory, sandbox: Any, email: str, tag: str, with_tag: Tagged
) -> None:
    sandbox.set_faults(drop_after_commit_rate=1)
    with pytest.raises(Retryable):
        directory.ensure_user(email, "Ada", "Lovelace", tag)
    sandbox.set_faults(drop_after_commit_rate=0)
    adopted = directory.ensure_user(email, "Ada", "Lovelace", tag)
    assert adopted.tag == tag
    assert [r["address"] for r in with_tag(sandbox.resources()["users"], tag)] == [email]


def test_insert_after_a_lost_response_adopts_through_409(
    directory: GoogleDirectory, sandbox: Any, email: str, tag: str, with_tag: Tagged
) -> None:
    sandbox.set_faults(drop_after_commit_rate=1)
    with pytest.raises(Retryable):
        directory.insert_user(email, "Ada", "Lovelace", tag)
    sandbox.set_faults(drop_after_commit_rate=0)
    with pytest.raises(Permanent) as caught:
        directory.insert_user(email, "Ada", "Lovelace", tag)
    assert caught.value.code == "email_taken"
    assert directory.ensure_user(email, "Ada", "Lovelace", tag).tag == tag
    assert len(with_tag(sandbox.resources()["users"], tag)) == 1


def test_provider_errors_are_retryable(
    directory: GoogleDirectory, sandbox: Any, email: str
) -> None:
    sandbox.set_faults(error_rate=1)
    with pytest.raises(Retryable) as caught:
        directory.get_user(email)
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.status in (500, 503)


def test_timeouts_are_retryable(
    sandbox: Any, provider_settings: Callable[..., Settings], email: str
) -> None:
    sandbox.set_faults(timeout_rate=1)
    settings = provider_settings(provider_read_timeout_s=0.3)
    with GoogleDirectory.from_settings(settings) as client, pytest.raises(Retryable) as caught:
        client.get_user(email)
    assert caught.value.code == "timeout"


def test_rate_limit_surfaces_retry_after(
    directory: GoogleDirectory, sandbox: Any, email: str
) -> None:
    sandbox.set_faults(rate_limit_per_s=1)
    with pytest.raises(RateLimited) as caught:
        for _ in range(20):
            with contextlib.suppress(NotFound):
                directory.get_user(email)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 0


def test_missing_credentials_are_auth_failed(
    sandbox: Any, provider_settings: Callable[..., Settings], email: str
) -> None:
    settings = provider_settings(google_access_token=SecretStr(""))
    with GoogleDirectory.from_settings(settings) as client, pytest.raises(Permanent) as caught:
        client.get_user(email)
    assert caught.value.code == "auth_failed"
