"""The Microsoft Graph client, with real msal tokens, against the sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.credentials import MicrosoftApp, expire_tokens, register_app, rotate_app_secret

from worker.providers import AUTH_FAILED, EMAIL_TAKEN, NotFound, Permanent
from worker.providers.connections import Connection, build_client
from worker.providers.microsoft_graph import MicrosoftGraph
from worker.settings import Settings

E3 = "05e9a617-0261-4cee-bb44-138d3ef5d965"


def connection(app: MicrosoftApp, secret: str | None = None, version: str = "1") -> Connection:
    return Connection(
        id=1,
        version=version,
        provider="microsoft",
        domain="contoso.example",
        config={"tenant_id": app.tenant_id, "client_id": app.client_id, "license_sku": "SPE_E3"},
        secrets={"client_secret": secret or app.client_secret},
    )


@pytest.fixture
def app(sandbox: Any, sandbox_url: str) -> MicrosoftApp:
    return register_app(sandbox_url)


@pytest.fixture
def graph(
    app: MicrosoftApp, provider_settings: Callable[..., Settings]
) -> Iterator[MicrosoftGraph]:
    client = build_client(provider_settings(), connection(app))
    assert isinstance(client, MicrosoftGraph)
    yield client
    client.close()


def test_ensure_user_creates_a_tagged_user_once(graph: MicrosoftGraph, sandbox: Any) -> None:
    first = graph.ensure_user("ada@contoso.example", "Ada", "L", "ct_1", usage_location="US")
    again = graph.ensure_user("ada@contoso.example", "Ada", "L", "ct_1", usage_location="US")
    assert again.id == first.id
    users = sandbox.resources()["users"]
    assert [(u["address"], u["tag"]) for u in users] == [("ada@contoso.example", "ct_1")]


def test_an_address_of_someone_else_is_email_taken(graph: MicrosoftGraph) -> None:
    graph.ensure_user("bob@contoso.example", "Bob", "B", "ct_1", usage_location="US")
    with pytest.raises(Permanent) as caught:
        graph.ensure_user("bob@contoso.example", "Bob", "B", "ct_2", usage_location="US")
    assert caught.value.code == EMAIL_TAKEN


def test_ensure_license_assigns_the_sku_once(graph: MicrosoftGraph, sandbox: Any) -> None:
    user = graph.ensure_user("cy@contoso.example", "Cy", "C", "ct_1", usage_location="US")
    graph.ensure_license(user.id, E3)
    graph.ensure_license(user.id, E3)
    assert sandbox.resources()["users"][0]["licenses"] == [E3]
    assert graph.resolve_sku("SPE_E3").consumed == 1  # type: ignore[union-attr]


def test_delete_tagged_deletes_ours_and_counts_gone_as_done(graph: MicrosoftGraph) -> None:
    graph.ensure_user("di@contoso.example", "Di", "D", "ct_1", usage_location="US")
    assert graph.delete_tagged("ct_1", "di@contoso.example") == 1
    assert graph.delete_tagged("ct_1", "di@contoso.example") == 0
    with pytest.raises(NotFound):
        graph.get_user("di@contoso.example")


def test_an_expired_token_is_replaced_after_the_401(
    graph: MicrosoftGraph, sandbox_url: str
) -> None:
    graph.ensure_user("ed@contoso.example", "Ed", "E", "ct_1", usage_location="US")
    expire_tokens(sandbox_url)
    assert graph.get_user("ed@contoso.example").tag == "ct_1"


def test_a_revoked_secret_is_auth_failed(
    graph: MicrosoftGraph, app: MicrosoftApp, sandbox_url: str
) -> None:
    graph.ensure_user("fa@contoso.example", "Fa", "F", "ct_1", usage_location="US")
    rotate_app_secret(sandbox_url, app, "a-new-secret")
    with pytest.raises(Permanent) as caught:
        graph.get_user("fa@contoso.example")
    assert caught.value.code == AUTH_FAILED


def test_two_tenants_see_only_their_own_users(
    graph: MicrosoftGraph, sandbox_url: str, provider_settings: Callable[..., Settings]
) -> None:
    graph.ensure_user("gu@contoso.example", "Gu", "G", "ct_1", usage_location="US")
    other = build_client(provider_settings(), connection(register_app(sandbox_url)))
    assert isinstance(other, MicrosoftGraph)
    with other, pytest.raises(NotFound):
        other.get_user("gu@contoso.example")
