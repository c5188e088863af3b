"""Deleting contacts made in a customer's own Google Workspace or Microsoft 365 tenant, and a
release that cannot finish (issue 25, part 4): the real API, real worker (and beat) processes,
the sandbox over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from support.credentials import (
    register_app,
    register_service_account,
    rotate_app_secret,
    service_account_key,
)
from support.invariants import check_invariants
from support.pipeline import FAST, wait_for
from support.services import serve_in_thread, settings_env

from worker.secrets import new_key

ADMIN = "admin@acme.example"


def email(local: str) -> dict[str, Any]:
    return {
        "contact_type": "email",
        "email_local": local,
        "first_name": "Ada",
        "last_name": "Lovelace",
    }


PLATFORM_ADMIN = "admin@assistants.example.com"  # the platform's own domain (EMAIL_DOMAIN)


@pytest.fixture
def osettings(make_settings, sandbox):
    # The platform's Google through its own delegated service account, as in production: its
    # tokens reach only its own domain, so a release sent to it for a user of a customer's
    # domain is refused (not answered "gone"). One secret key shared by the API (sealing) and
    # the worker (opening). A stuck clean-up comes back after 2 s instead of 15 min.
    platform = service_account_key(name="platform", seed=1)
    register_service_account(sandbox.url, platform, admin_subjects=[PLATFORM_ADMIN])
    return make_settings(
        sandbox_url=sandbox.url,
        secret_keys=new_key(),
        compensation_stuck_retry_s=2.0,
        **{
            **FAST,
            "google_access_token": "",
            "google_service_account_json": json.dumps(platform.info),
            "google_admin_subject": PLATFORM_ADMIN,
        },
    )


@pytest.fixture
def api(osettings, db):
    from api_stub.app import create_app

    with (
        serve_in_thread(create_app(osettings, db=db)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def connect(api, tenant, sandbox, suite: str):
    """The tenant's own workspace of `suite`, connected through the API; the Microsoft app
    (to refuse its secret later) or None."""
    if suite == "microsoft":
        app = register_app(sandbox.url)
        answer = api.put(
            "/v0/providers/microsoft",
            headers=tenant.headers,
            json={
                "domain": "contoso.example",
                "tenant_id": app.tenant_id,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "license_sku": "SPE_E3",
            },
        )
    else:
        app = None
        key = service_account_key()
        register_service_account(sandbox.url, key, admin_subjects=[ADMIN])
        answer = api.put(
            "/v0/providers/google",
            headers=tenant.headers,
            json={"domain": "acme.example", "admin_subject": ADMIN, "service_account": key.info},
        )
    assert answer.status_code == 200, answer.text
    return app


def url(contact) -> str:
    return f"/v0/assistant/{contact['assistant_id']}/contact/{contact['id']}"


def create_active(api, tenant, local: str = "ada") -> dict[str, Any]:
    answer = api.post(
        f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
        headers=tenant.headers,
        json=email(local),
    )
    assert answer.status_code == 202, answer.text
    return wait_status(api, tenant, answer.json()["info"], "active")


def read(api, tenant, contact) -> dict[str, Any]:
    got = api.get(url(contact), headers=tenant.headers)
    assert got.status_code == 200, got.text
    return got.json()["info"]


def wait_status(api, tenant, contact, status: str, timeout: float = 60) -> dict[str, Any]:
    def reached():
        now = read(api, tenant, contact)
        assert now["status"] != "failed", now["error"]
        return now if now["status"] == status else None

    return wait_for(reached, timeout=timeout)


def users_of(sandbox, provider: str) -> list[dict[str, Any]]:
    return [u for u in sandbox.resources()["users"] if u["provider"] == provider]


@pytest.mark.parametrize("suite", ["google", "microsoft"])
def test_deleting_a_contact_of_a_connected_workspace_removes_its_user_from_that_tenant(
    api, spawn, osettings, make_tenant, sandbox, db, suite
):
    tenant = make_tenant()
    connect(api, tenant, sandbox, suite)
    spawn("worker", osettings, "--concurrency", "2")
    contact = create_active(api, tenant)
    domain = "contoso.example" if suite == "microsoft" else "acme.example"
    assert contact["address"] == f"ada@{domain}"
    [user] = users_of(sandbox, suite)
    assert (user["tag"], user["address"]) == (contact["id"], contact["address"])

    answer = api.delete(url(contact), headers=tenant.headers)
    assert answer.status_code == 202, answer.text
    done = wait_status(api, tenant, contact, "deleted")
    assert done["deleted_reason"] == "requested"
    # The user is gone from the customer's own tenant, not only looked for at the platform's.
    assert sandbox.resources()["users"] == []
    assert check_invariants(db, sandbox) == {"deleted": 1}


def jobs_stuck(settings, *flags: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "jobs", "stuck", *flags],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def stuck_rows(settings) -> list[dict[str, Any]]:
    return json.loads(jobs_stuck(settings, "--json").stdout)["stuck"]


def log_events(proc, name: str) -> list[dict[str, Any]]:
    lines = proc.log.read_text().splitlines()
    found = [json.loads(line) for line in lines if line.startswith("{") and name in line]
    return [e for e in found if e.get("event") == name]


def test_a_deletion_refused_its_credentials_shows_as_stuck_and_finishes_once_they_work(
    api, spawn, osettings, make_tenant, sandbox, db
):
    tenant = make_tenant()
    app = connect(api, tenant, sandbox, "microsoft")
    worker = spawn("worker", osettings, "--concurrency", "2")
    spawn("beat", osettings)  # the reconciler brings a stuck clean-up back at its cadence
    contact = create_active(api, tenant)
    # The customer rotates the app's secret without telling us: ours is refused from now on.
    rotate_app_secret(sandbox.url, app, "a-secret-we-were-never-given")

    asked = time.monotonic()
    assert api.delete(url(contact), headers=tenant.headers).status_code == 202
    stuck = wait_for(lambda: (c := read(api, tenant, contact))["stuck"] and c, timeout=60)
    print(f"stuck: true {time.monotonic() - asked:.1f} s after the DELETE")
    assert stuck["status"] == "deleting"
    [row] = stuck_rows(osettings)
    assert (row["id"], row["status"], row["stuck_reason"]) == (
        contact["id"],
        "deleting",
        "auth_failed",
    )
    assert "stuck" in (text := jobs_stuck(osettings).stdout) and "(deleting: requested)" in text
    metrics = api.get("/metrics").text
    assert 'provisioner_contacts_stuck{reason="auth_failed"} 1.0' in metrics
    # Retried at the stuck cadence (2 s here), still refused, and said at error level once.
    wait_for(lambda: log_events(worker, "compensation_retry"), timeout=30)
    [line] = log_events(worker, "compensation_stuck")
    assert (line["level"], line["cleanup"], line["error_code"]) == (
        "error",
        "release",
        "auth_failed",
    )
    assert len(users_of(sandbox, "microsoft")) == 1  # still in the tenant: nothing could delete it

    rotate_app_secret(sandbox.url, app, app.client_secret)  # the customer puts it right
    done = wait_status(api, tenant, contact, "deleted", timeout=60)
    assert done["stuck"] is False and done["deleted_reason"] == "requested"
    assert sandbox.resources()["users"] == []
    assert stuck_rows(osettings) == []
    assert 'provisioner_contacts_stuck{reason="auth_failed"} 1.0' not in api.get("/metrics").text
    assert len(log_events(worker, "compensation_stuck")) == 1
    assert check_invariants(db, sandbox) == {"deleted": 1}
