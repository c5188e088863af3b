"""The console over HTTP: off without a token, the token only, CSRF on every button."""

from __future__ import annotations

import httpx
import pytest
from support.services import serve_in_thread

CONSOLE_TOKEN = "console-test-token-0123456789"  # as psettings in conftest.py sets it


def test_console_is_404_when_no_token_is_set(make_settings, db):
    from api_stub.app import create_app

    with serve_in_thread(create_app(make_settings(), db=db)) as url:
        response = httpx.get(f"{url}/console/", headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"})
    assert response.status_code == 404


def test_an_api_key_never_opens_the_console(live_url, tenant):
    page = httpx.get(f"{live_url}/console/", headers=tenant.headers)
    assert page.status_code == 303 and page.headers["location"].endswith("/console/sign-in")
    events = httpx.get(f"{live_url}/console/events", headers=tenant.headers)
    assert events.status_code == 401


def test_the_console_token_as_bearer_opens_it(live_url):
    page = httpx.get(f"{live_url}/console/", headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"})
    assert page.status_code == 200 and "Overview" in page.text


def test_sign_in_sets_an_httponly_samesite_cookie(live_url):
    with httpx.Client(base_url=live_url) as http:
        wrong = http.post("/console/sign-in", data={"token": "nope"})
        assert wrong.status_code == 401 and "console_session" not in wrong.cookies
        right = http.post("/console/sign-in", data={"token": CONSOLE_TOKEN})
        assert right.status_code == 303
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert http.get("/console/batches").status_code == 200


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_a_button_without_the_csrf_token_is_refused(live_url, csrf):
    with httpx.Client(base_url=live_url) as http:
        http.post("/console/sign-in", data={"token": CONSOLE_TOKEN})
        data = {} if csrf is None else {"csrf": csrf}
        response = http.post("/console/failed/ct_x/retry", data=data)
    assert response.status_code == 403
