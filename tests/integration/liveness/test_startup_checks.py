"""Start-up checks (issue 18, item 4): a worker pointed at the real providers with an empty
credential will not start; /readyz reports a provider that refuses the credentials."""

from __future__ import annotations

import subprocess
import sys

import httpx
from pydantic import SecretStr
from support.pipeline import wait_for
from support.services import serve_in_thread, settings_env

from api_stub.app import create_app


def test_worker_with_real_provider_urls_and_an_empty_credential_exits_naming_it(make_settings):
    settings = make_settings(twilio_auth_token="", google_access_token="token")
    done = subprocess.run([sys.executable, "-m", "worker.cli", "worker"],
                          env=settings_env(settings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "PROVISIONER_TWILIO_AUTH_TOKEN" in done.stderr
    assert "PROVISIONER_GOOGLE_ACCESS_TOKEN" not in done.stderr


def test_readyz_reports_a_provider_that_refuses_the_credentials(make_settings, sandbox, db):
    settings = make_settings(sandbox_url=sandbox.url, twilio_auth_token="",
                             google_access_token="sandbox-token")
    with serve_in_thread(create_app(settings, db=db)) as api, httpx.Client(base_url=api) as http:
        answer = wait_for(lambda: (r := http.get("/readyz")).status_code == 503 and r, timeout=10)
    error = answer.json()["error"]
    assert error["code"] == "not_ready"
    assert error["fields"]["twilio"] == "credentials_refused"
    assert error["fields"]["google"] == "ok"


def test_readyz_asks_the_providers_at_most_once_a_minute(make_settings, sandbox, db):
    settings = make_settings(sandbox_url=sandbox.url, twilio_auth_token=SecretStr("t"),
                             google_access_token="sandbox-token")
    with serve_in_thread(create_app(settings, db=db)) as api, httpx.Client(base_url=api) as http:
        wait_for(lambda: http.get("/readyz").json()["info"].get("twilio") == "ok", timeout=10)
        asked = sandbox.stats()["requests"]
        for _ in range(5):
            assert http.get("/readyz").json()["info"] == {
                "database": "ok", "redis": "ok", "twilio": "ok", "google": "ok"}
    assert sandbox.stats()["requests"] == asked
