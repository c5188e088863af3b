"""The Directory client with real google-auth service-account tokens, against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from support.credentials import expire_tokens, register_service_account, service_account_key

from worker.providers import AUTH_FAILED, GoogleDirectory, Permanent
from worker.providers.connections import Connection, CredentialsRefused, verify
from worker.settings import Settings

ADMIN = "admin@acme.example"


def service_account_settings(make: Callable[..., Settings], info: dict[str, Any]) -> Settings:
    return make(
        google_access_token=SecretStr(""),
        google_service_account_json=SecretStr(json.dumps(info)),
        google_admin_subject=ADMIN,
    )


def test_the_platform_service_account_provisions_users(
    sandbox: Any, sandbox_url: str, provider_settings: Callable[..., Settings]
) -> None:
    key = service_account_key()
    register_service_account(sandbox_url, key, admin_subjects=[ADMIN])
    with GoogleDirectory.from_settings(service_account_settings(provider_settings, key.info)) as d:
        user = d.ensure_user("ada@acme.example", "Ada", "L", "ct_1")
        expire_tokens(sandbox_url)  # mid-run: the next call gets a 401, refreshes, succeeds
        assert d.get_user("ada@acme.example").id == user.id


def test_a_key_the_service_account_no_longer_has_is_auth_failed(
    sandbox: Any, sandbox_url: str, provider_settings: Callable[..., Settings]
) -> None:
    key = service_account_key()
    register_service_account(sandbox_url, key)
    with GoogleDirectory.from_settings(service_account_settings(provider_settings, key.info)) as d:
        d.ensure_user("bo@acme.example", "Bo", "B", "ct_1")
        # The key is deleted in the console: another public key is all Google knows now.
        register_service_account(sandbox_url, service_account_key(seed=1))
        with pytest.raises(Permanent) as caught:
            d.get_user("bo@acme.example")
    assert caught.value.code == AUTH_FAILED


def test_verify_names_the_admin_subject_outside_the_delegation(
    sandbox: Any, sandbox_url: str, provider_settings: Callable[..., Settings]
) -> None:
    key = service_account_key()
    register_service_account(sandbox_url, key, admin_subjects=[ADMIN])
    connection = Connection(
        id=1,
        version="1",
        provider="google",
        domain="acme.example",
        config={"admin_subject": "someone@acme.example"},
        secrets={"service_account": key.info},
    )
    with pytest.raises(CredentialsRefused) as caught:
        verify(provider_settings(), connection)
    assert caught.value.field == "admin_subject"


def test_a_delegated_admin_reaches_only_the_users_of_its_own_domain(
    sandbox: Any, sandbox_url: str, provider_settings: Callable[..., Settings]
) -> None:
    key = service_account_key()
    register_service_account(sandbox_url, key, admin_subjects=[ADMIN])
    with GoogleDirectory.from_settings(provider_settings()) as anyone:  # a static token
        elsewhere = anyone.ensure_user("bo@other.example", "Bo", "B", "ct_other")
    with GoogleDirectory.from_settings(service_account_settings(provider_settings, key.info)) as d:
        assert d.ensure_user("ada@eu.acme.example", "Ada", "L", "ct_1").tag == "ct_1"  # subdomain
        refused = [
            lambda: d.get_user("bo@other.example"),
            lambda: d.get_user(elsewhere.id),
            lambda: d.delete_tagged("bo@other.example", "ct_other"),
            lambda: d.ensure_user("cy@other.example", "Cy", "C", "ct_2", look_up=False),
        ]
        for call in refused:
            with pytest.raises(Permanent) as caught:
                call()
            assert caught.value.code == AUTH_FAILED
    users = {u["address"] for u in sandbox.resources()["users"]}
    assert users == {"bo@other.example", "ada@eu.acme.example"}  # nothing made or deleted there
