"""`/v0/providers/...` and addresses brought by the customer, through the HTTP API (the
credentials are checked against the sandbox's token endpoints)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support.credentials import register_app, register_service_account, service_account_key
from support.services import serve_in_thread

from worker.secrets import new_key


@pytest.fixture
def api(make_settings, sandbox, db) -> Iterator[httpx.Client]:
    from api_stub.app import create_app

    settings = make_settings(sandbox_url=sandbox.url, secret_keys=new_key())
    with serve_in_thread(create_app(settings, db=db)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


def microsoft_body(app, **changes):
    return {"domain": "contoso.example", "tenant_id": app.tenant_id, "client_id": app.client_id,
            "client_secret": app.client_secret, "license_sku": "SPE_E3", **changes}


def test_a_wrong_client_secret_is_a_422_naming_client_secret(api, tenant, sandbox):
    app = register_app(sandbox.url)
    answer = api.put("/v0/providers/microsoft", headers=tenant.headers,
                     json=microsoft_body(app, client_secret="not-the-secret"))
    assert answer.status_code == 422
    assert set(answer.json()["error"]["fields"]) == {"client_secret"}
    assert api.get("/v0/providers/microsoft", headers=tenant.headers).status_code == 404


def test_a_sku_the_tenant_does_not_have_is_a_422_naming_license_sku(api, tenant, sandbox):
    app = register_app(sandbox.url)
    answer = api.put("/v0/providers/microsoft", headers=tenant.headers,
                     json=microsoft_body(app, license_sku="NOT_SUBSCRIBED"))
    assert answer.status_code == 422
    assert set(answer.json()["error"]["fields"]) == {"license_sku"}


def test_a_key_google_does_not_know_is_a_422_naming_service_account(api, tenant, sandbox):
    registered, other = service_account_key(), service_account_key(seed=1)
    register_service_account(sandbox.url, registered)
    forged = {**other.info, "client_email": registered.client_email}
    answer = api.put("/v0/providers/google", headers=tenant.headers, json={
        "domain": "acme.example", "admin_subject": "admin@acme.example",
        "service_account": forged})
    assert answer.status_code == 422
    assert set(answer.json()["error"]["fields"]) == {"service_account"}


def test_bad_bodies_name_every_field(api, tenant):
    answer = api.put("/v0/providers/microsoft", headers=tenant.headers,
                     json={"domain": "not a domain", "tenant_id": "x", "client_id": "y"})
    assert answer.status_code == 422
    assert set(answer.json()["error"]["fields"]) == {
        "domain", "tenant_id", "client_id", "client_secret", "license_sku"}
    assert api.put("/v0/providers/yahoo", headers=tenant.headers, json={}).status_code == 404


def test_delete_is_refused_while_a_live_contact_uses_the_connection(api, tenant, sandbox):
    app = register_app(sandbox.url)
    assert api.put("/v0/providers/microsoft", headers=tenant.headers,
                   json=microsoft_body(app)).status_code == 200
    body = {"contact_type": "email", "email_local": "ada", "first_name": "A", "last_name": "L"}
    contact = api.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
                       headers=tenant.headers, json=body).json()["info"]
    assert contact["request"]["email_provider"] == "microsoft"
    answer = api.delete("/v0/providers/microsoft", headers=tenant.headers)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "connection_in_use"


def test_delete_removes_an_unused_connection(api, tenant, sandbox):
    app = register_app(sandbox.url)
    api.put("/v0/providers/microsoft", headers=tenant.headers, json=microsoft_body(app))
    assert api.delete("/v0/providers/microsoft", headers=tenant.headers).status_code == 204
    assert api.get("/v0/providers/microsoft", headers=tenant.headers).status_code == 404
    assert api.delete("/v0/providers/microsoft", headers=tenant.headers).status_code == 404


def test_email_provider_microsoft_without_a_connection_is_a_422(api, tenant):
    body = {"contact_type": "email", "email_local": "ada", "first_name": "A", "last_name": "L",
            "email_provider": "microsoft"}
    answer = api.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
                      headers=tenant.headers, json=body)
    assert answer.status_code == 422
    assert set(answer.json()["error"]["fields"]) == {"email_provider"}


def test_a_brought_address_is_active_at_once_and_free(api, tenant):
    body = {"contact_type": "email", "provisioned_by": "user", "address": "Ada@Example.com"}
    answer = api.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
                      headers=tenant.headers, json=body)
    assert answer.status_code == 202
    info = answer.json()["info"]
    assert (info["status"], info["address"], info["setup_cost"], info["steps"]) == (
        "active", "ada@example.com", "0.00", [])
    credits = api.get("/v0/credits", headers=tenant.headers).json()["info"]
    assert credits["reserved"] == "0.00" and credits["balance"] == "100.00"


def test_a_brought_address_live_on_another_contact_is_address_in_use(api, make_tenant):
    first, second = make_tenant(), make_tenant(name="other")
    body = {"contact_type": "phone", "provisioned_by": "user", "address": "+14155552671"}
    assert api.post(f"/v0/assistant/{first.assistant_ids[0]}/contact",
                    headers=first.headers, json=body).status_code == 202
    answer = api.post(f"/v0/assistant/{second.assistant_ids[0]}/contact",
                      headers=second.headers, json=body)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "address_in_use"


def test_a_brought_whatsapp_sender_is_refused_naming_provisioned_by(api, tenant):
    body = {"contact_type": "whatsapp", "provisioned_by": "user", "address": "+14155552671"}
    answer = api.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
                      headers=tenant.headers, json=body)
    assert answer.status_code == 422
    assert set(answer.json()["error"]["fields"]) == {"provisioned_by"}
