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


def test_readyz_reports_a_provider_that_refuses_the_credentials_and_stays_ready(
    make_settings, sandbox, db
):
    """CONTRACT.md "Production": /readyz fails only on the database and Redis; a refused
    credential is reported in its body and by `provisioner_provider_credentials_ok`, and the
    API pods stay in their Service (they call no provider)."""
    settings = make_settings(sandbox_url=sandbox.url, twilio_auth_token="",
                             google_access_token="sandbox-token")
    with serve_in_thread(create_app(settings, db=db)) as api, httpx.Client(base_url=api) as http:
        answer = wait_for(
            lambda: (r := http.get("/readyz")).json()["info"].get("twilio") and r, timeout=10)
        metrics = http.get("/metrics").text
    assert answer.status_code == 200
    assert answer.json()["info"] == {"database": "ok", "redis": "ok",
                                     "twilio": "credentials_refused", "google": "ok"}
    assert 'provisioner_provider_credentials_ok{provider="twilio"} 0.0' in metrics
    assert 'provisioner_provider_credentials_ok{provider="google"} 1.0' in metrics


def test_readyz_fails_when_redis_does_not_answer_whatever_the_providers_say(
    make_settings, sandbox, db
):
    # A port nothing listens on: the API's Redis is gone.
    settings = make_settings(sandbox_url=sandbox.url, twilio_auth_token="t",
                             google_access_token="sandbox-token",
                             redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings, db=db, publisher=_NoPublisher())
    with serve_in_thread(app) as api, httpx.Client(base_url=api) as http:
        answer = http.get("/readyz")
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "not_ready"
    assert error["fields"]["database"] == "ok"
    assert error["fields"]["redis"] != "ok"
    assert "redis" in error["message"] and "database" not in error["message"]


class _NoPublisher:
    def provision(self, *args, **kwargs):
        raise AssertionError("not called")


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
