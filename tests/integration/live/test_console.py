"""The console over HTTP: off without a token, the token only, CSRF on every button."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator

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


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@contextlib.contextmanager
def signed_in_client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url) as http:
        assert http.post("/console/sign-in", data={"token": CONSOLE_TOKEN}).status_code == 303
        yield http


def refused(http: httpx.Client) -> bool:
    """The console sends this client to the sign-in page, and its event stream answers 401."""
    page = http.get("/console/")
    events = http.get("/console/events")
    return (page.status_code == 303 and page.headers["location"].endswith("/console/sign-in")
            and events.status_code == 401)


def test_an_expired_session_is_refused(make_settings, sandbox, db):
    from api_stub.app import create_app

    settings = make_settings(sandbox_url=sandbox.url, console_token=CONSOLE_TOKEN,
                             console_session_s=1)
    with serve_in_thread(create_app(settings, db=db)) as url, signed_in_client(url) as http:
        cookie = http.cookies["console_session"]
        assert http.get("/console/").status_code == 200
        time.sleep(2.2)  # itsdangerous stamps whole seconds: over 1 s old by then
        assert refused(http)
        # Its Redis entry is gone too; a cookie re-sent by hand fares no better.
        with httpx.Client(base_url=url, cookies={"console_session": cookie}) as copy:
            assert refused(copy)


def test_sign_out_revokes_the_session_and_every_copy_of_its_cookie(live_url):
    with signed_in_client(live_url) as http:
        overview = http.get("/console/")
        assert overview.status_code == 200
        cookie = http.cookies["console_session"]
        with httpx.Client(base_url=live_url, cookies={"console_session": cookie}) as copied:
            assert copied.get("/console/batches").status_code == 200
            out = http.post("/console/sign-out", data={"csrf": csrf_of(overview.text)})
            assert out.status_code == 303
            assert out.headers["location"].endswith("/console/sign-in")
            assert "console_session" not in http.cookies  # the browser forgets it
            assert refused(copied)
        # A new sign-in is a new session.
        assert http.post("/console/sign-in", data={"token": CONSOLE_TOKEN}).status_code == 303
        assert http.get("/console/").status_code == 200


def test_a_sessions_csrf_token_does_not_work_for_another_session(live_url):
    with signed_in_client(live_url) as first, signed_in_client(live_url) as second:
        assert first.cookies["console_session"] != second.cookies["console_session"]
        token = csrf_of(first.get("/console/failed").text)
        assert csrf_of(second.get("/console/failed").text) != token
        assert second.post("/console/failed/ct_x/retry", data={"csrf": token}).status_code == 403


def test_sign_in_attempts_are_limited_per_client_address(live_url):
    with httpx.Client(base_url=live_url) as http:
        for _ in range(4):
            assert http.post("/console/sign-in", data={"token": "guess"}).status_code == 401
        # The sign-in link's `?token=` is an attempt too.
        assert http.get("/console/sign-in", params={"token": "guess"}).status_code == 200
        limited = http.post("/console/sign-in", data={"token": CONSOLE_TOKEN})
        assert limited.status_code == 429 and "console_session" not in limited.cookies
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "Too many sign-in attempts" in limited.text
        link = http.get("/console/sign-in", params={"token": CONSOLE_TOKEN})
        assert link.status_code == 429
        # The bearer header (scripts) is not a sign-in, and still opens the console.
        bearer = http.get("/console/", headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"})
        assert bearer.status_code == 200


def test_an_open_event_stream_ends_when_its_session_is_signed_out(live_url):
    with signed_in_client(live_url) as http, \
            http.stream("GET", "/console/events", timeout=8) as stream:
        assert stream.status_code == 200
        overview = http.get("/console/")
        signed_out = time.monotonic()
        assert http.post("/console/sign-out",
                         data={"csrf": csrf_of(overview.text)}).status_code == 303
        # The stream's next outbox read (within 5 s) ends it; one that went on would send
        # nothing for 10 s (its first ping), and the 8 s read timeout would fail the test.
        for _ in stream.iter_lines():
            pass
        assert time.monotonic() - signed_out < 8


def test_sessions_answer_503_while_redis_is_down_and_the_bearer_header_still_works(
    make_settings, sandbox, db
):
    from api_stub.app import create_app

    from support.services import free_port

    settings = make_settings(sandbox_url=sandbox.url, console_token=CONSOLE_TOKEN,
                             redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    with serve_in_thread(create_app(settings, db=db)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        sign_in = http.post("/console/sign-in", data={"token": CONSOLE_TOKEN})
        assert sign_in.status_code == 503 and sign_in.headers["Retry-After"] == "5"
        assert "console_session" not in sign_in.cookies
        with httpx.Client(base_url=url, cookies={"console_session": "x.y.z"}) as forged:
            # A bad signature is refused without asking Redis.
            assert forged.get("/console/").status_code == 303
        # A well-signed cookie cannot be checked against sign-outs: refused, never a 500.
        from api_stub.console.sessions import Sessions

        signed = Sessions(CONSOLE_TOKEN, None, 3600)._signer.dumps("some-session")
        with httpx.Client(base_url=url, cookies={"console_session": signed}) as unsure:
            assert unsure.get("/console/").status_code == 503
        bearer = http.get("/console/", headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"})
        assert bearer.status_code == 200
