"""Accounts' own workspaces end to end: connections set through the API (checked against the
sandbox's token endpoints with real google-auth and msal), email contacts submitted through the
API and provisioned by a real worker process in each account's own domain."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.credentials import (
    MicrosoftApp,
    expire_tokens,
    register_app,
    register_service_account,
    rotate_app_secret,
    service_account_key,
)
from support.invariants import check_invariants
from support.pipeline import FAST, all_terminal, statuses, wait_for
from support.services import serve_in_thread

from worker.secrets import new_key

ADMIN = "admin@acme.example"


def email(local: str, **extra: Any) -> dict[str, Any]:
    return {"contact_type": "email", "email_local": local, "first_name": "Ada",
            "last_name": "Lovelace", **extra}


@pytest.fixture
def csettings(make_settings, sandbox):
    # One key shared by the API (sealing) and the worker (opening), as in a deployment.
    return make_settings(sandbox_url=sandbox.url, secret_keys=new_key(), **FAST)


@pytest.fixture
def api(csettings, db) -> Iterator[httpx.Client]:
    from api_stub.app import create_app

    with serve_in_thread(create_app(csettings, db=db)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


def put_microsoft(api, tenant, app: MicrosoftApp, domain: str) -> httpx.Response:
    return api.put("/v0/providers/microsoft", headers=tenant.headers, json={
        "domain": domain, "tenant_id": app.tenant_id, "client_id": app.client_id,
        "client_secret": app.client_secret, "license_sku": "SPE_E3",
    })


def put_google(api, tenant, sandbox_url: str, domain: str) -> httpx.Response:
    key = service_account_key()
    register_service_account(sandbox_url, key, admin_subjects=[ADMIN])
    return api.put("/v0/providers/google", headers=tenant.headers, json={
        "domain": domain, "admin_subject": ADMIN, "service_account": key.info,
    })


def post(api, tenant, body, assistant=None) -> dict[str, Any]:
    assistant = assistant or tenant.assistant_ids[0]
    response = api.post(f"/v0/assistant/{assistant}/contact", headers=tenant.headers, json=body)
    assert response.status_code == 202, response.text
    return response.json()["info"]


def test_microsoft_contact_is_made_licensed_in_the_tenant_through_a_worker(
    api, spawn, csettings, make_tenant, sandbox, db
):
    tenant = make_tenant()
    app = register_app(sandbox.url)
    answer = put_microsoft(api, tenant, app, "contoso.example")
    assert answer.status_code == 200, answer.text
    assert app.client_secret not in answer.text
    info = post(api, tenant, email("ada"))
    assert info["request"]["email_provider"] == "microsoft"
    assert [s["name"] for s in info["steps"]] == ["create_user", "assign_license", "confirm_user"]
    spawn("worker", csettings, "--concurrency", "4")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    contact = api.get(f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{info['id']}",
                      headers=tenant.headers).json()["info"]
    assert contact["status"] == "active", contact["error"]
    assert contact["address"] == "ada@contoso.example"
    [user] = sandbox.resources()["users"]
    assert (user["provider"], user["tag"], user["licenses"]) == (
        "microsoft", info["id"], ["05e9a617-0261-4cee-bb44-138d3ef5d965"])
    assert check_invariants(db, sandbox) == {"active": 1}


def test_a_token_that_expires_mid_run_is_refreshed_without_a_failure(
    api, spawn, csettings, make_tenant, sandbox, db
):
    tenant = make_tenant(assistants=2)
    assert put_google(api, tenant, sandbox.url, "acme.example").status_code == 200
    spawn("worker", csettings, "--concurrency", "2")
    post(api, tenant, email("first"), tenant.assistant_ids[0])
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    expire_tokens(sandbox.url)  # the worker's cached token is now refused
    post(api, tenant, email("second"), tenant.assistant_ids[1])
    wait_for(lambda: all_terminal(db, 2), timeout=60)
    assert set(statuses(db).values()) == {"active"}
    assert sandbox.stats()["by_status"].get("401", 0) >= 1  # refused once, then refreshed
    assert sorted(u["address"] for u in sandbox.resources()["users"]) == [
        "first@acme.example", "second@acme.example"]
    check_invariants(db, sandbox)


def test_a_revoked_credential_fails_the_contact_with_auth_failed_and_leaves_nothing(
    api, spawn, csettings, make_tenant, sandbox, db
):
    tenant = make_tenant(credits_cents=1_000)
    app = register_app(sandbox.url)
    assert put_microsoft(api, tenant, app, "contoso.example").status_code == 200
    rotate_app_secret(sandbox.url, app, "the-secret-after-a-rotation")  # ours is revoked
    info = post(api, tenant, email("ada"))
    spawn("worker", csettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    contact = api.get(f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{info['id']}",
                      headers=tenant.headers).json()["info"]
    assert contact["status"] == "failed"
    assert contact["error"]["code"] == "auth_failed"
    credits = api.get("/v0/credits", headers=tenant.headers).json()["info"]
    assert credits == {"balance": "10.00", "reserved": "0.00", "available": "10.00"}
    assert sandbox.resources()["users"] == []
    assert check_invariants(db, sandbox) == {"failed": 1}


def test_two_accounts_batches_are_made_in_their_own_domains_by_one_worker(
    api, spawn, csettings, make_tenant, sandbox, db
):
    google_tenant = make_tenant(assistants=2, name="acme")
    microsoft_tenant = make_tenant(assistants=2, name="contoso")
    assert put_google(api, google_tenant, sandbox.url, "acme.example").status_code == 200
    app = register_app(sandbox.url)
    assert put_microsoft(api, microsoft_tenant, app, "contoso.example").status_code == 200
    for tenant in (google_tenant, microsoft_tenant):
        items = [{"assistant_id": a, **email(f"bot{i}")}
                 for i, a in enumerate(tenant.assistant_ids)]
        answer = api.post("/v0/contact/batch", headers=tenant.headers, json={"items": items})
        assert answer.status_code == 202 and not answer.json()["info"]["rejected"], answer.text
    spawn("worker", csettings, "--concurrency", "4")
    wait_for(lambda: all_terminal(db, 4), timeout=90)
    assert set(statuses(db).values()) == {"active"}
    users = {(u["provider"], u["address"]) for u in sandbox.resources()["users"]}
    assert users == {("google", "bot0@acme.example"), ("google", "bot1@acme.example"),
                     ("microsoft", "bot0@contoso.example"), ("microsoft", "bot1@contoso.example")}
    assert check_invariants(db, sandbox) == {"active": 4}


def test_a_connection_is_kept_encrypted_and_never_shown_or_logged(
    api, spawn, csettings, make_tenant, sandbox, db
):
    from sqlalchemy import select

    from worker.store.models import ProviderConnection

    tenant = make_tenant()
    app = register_app(sandbox.url)
    assert put_microsoft(api, tenant, app, "contoso.example").status_code == 200
    shown = api.get("/v0/providers/microsoft", headers=tenant.headers)
    assert shown.status_code == 200
    assert shown.json()["info"]["client_id"] == app.client_id
    assert app.client_secret not in shown.text
    with db.read() as session:
        row = session.execute(select(ProviderConnection)).scalar_one()
        assert app.client_secret not in row.secrets_sealed
        assert app.client_secret not in str(row.config)
    post(api, tenant, email("ada"))
    worker = spawn("worker", csettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    worker.stop()
    assert app.client_secret not in worker.log.read_text()
