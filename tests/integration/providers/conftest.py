"""Provider clients pointed at the provider sandbox (fixtures `sandbox_url` and `sandbox` come
from tests/conftest.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from worker.providers import GoogleDirectory, Providers, TwilioNumbers, TwilioSenders
from worker.settings import Settings

_tags = itertools.count(1)


@pytest.fixture
def provider_settings(sandbox_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for clients of the sandbox; keyword arguments override (never the environment)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "sandbox_url": sandbox_url,
            "var_dir": tmp_path,
            "provider_connect_timeout_s": 1.0,
            "provider_read_timeout_s": 1.0,
            # Any non-empty credentials: the sandbox, like the real services, refuses none.
            "twilio_auth_token": SecretStr("sandbox-auth-token"),
            "google_access_token": SecretStr("sandbox-access-token"),
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def providers(sandbox: Any, provider_settings: Callable[..., Settings]) -> Iterator[Providers]:
    with Providers.from_settings(provider_settings()) as built:
        yield built


@pytest.fixture
def numbers(providers: Providers) -> TwilioNumbers:
    return providers.numbers


@pytest.fixture
def senders(providers: Providers) -> TwilioSenders:
    return providers.senders


@pytest.fixture
def directory(providers: Providers) -> GoogleDirectory:
    return providers.directory


@pytest.fixture
def tag() -> str:
    """A fresh contact id to tag resources with."""
    return f"c_test{next(_tags):06d}"


def tagged(resources: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The sandbox resources carrying `tag`."""
    return [r for r in resources if r.get("tag") == tag]


@pytest.fixture
def with_tag() -> Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]:
    return tagged
