"""The /v0/webhook routes over real HTTP: set, show, delete, rotate, list; unsafe URLs get 422."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support.services import serve_in_thread
from support.webhooks import REFUSED_URLS


@pytest.fixture
def strict_client(make_settings, db) -> Iterator[httpx.Client]:
    """The API as deployed: private and loopback targets refused."""
    from api_stub.app import create_app

    app = create_app(make_settings(webhook_allow_private=False), db=db)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def test_secret_is_made_on_first_set_and_shown_only_then(client, tenant):
    assert client.get("/v0/webhook", headers=tenant.headers).json()["info"]["set"] is False
    first = client.put("/v0/webhook", json={"url": "http://127.0.0.1:9/a"}, headers=tenant.headers)
    assert first.status_code == 200
    info = first.json()["info"]
    assert info["url"] == "http://127.0.0.1:9/a" and info["secret"].startswith("whsec_")

    again = client.put("/v0/webhook", json={"url": "http://127.0.0.1:9/b"}, headers=tenant.headers)
    assert again.json()["info"]["secret"] is None
    shown = client.get("/v0/webhook", headers=tenant.headers)
    assert shown.json()["info"]["url"] == "http://127.0.0.1:9/b"
    assert info["secret"] not in shown.text

    rotated = client.post("/v0/webhook/rotate-secret", headers=tenant.headers).json()["info"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != info["secret"]
    assert rotated["previous_secret_expires_at"].endswith("Z")

    assert client.delete("/v0/webhook", headers=tenant.headers).json() == {
        "info": {"deleted": True}
    }
    assert client.get("/v0/webhook", headers=tenant.headers).json()["info"]["set"] is False
    gone = client.post("/v0/webhook/rotate-secret", headers=tenant.headers)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def test_routes_need_an_api_key(client):
    for method, path in (("GET", "/v0/webhook"), ("PUT", "/v0/webhook"),
                         ("DELETE", "/v0/webhook"), ("POST", "/v0/webhook/rotate-secret"),
                         ("GET", "/v0/webhook/deliveries")):
        answer = client.request(method, path, json={"url": "http://127.0.0.1/"})
        assert answer.status_code == 401, path
        assert answer.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("body", [{}, {"url": 5}, {"url": ""}, [], {"url": "x" * 3000}])
def test_bad_bodies_name_the_url_field(client, tenant, body):
    answer = client.put("/v0/webhook", json=body, headers=tenant.headers)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_request" and error["fields"]


@pytest.mark.parametrize("url", sorted(REFUSED_URLS))
def test_each_unsafe_url_is_refused_when_set(strict_client, tenant, url):
    answer = strict_client.put("/v0/webhook", json={"url": url}, headers=tenant.headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["fields"]["url"]
    assert strict_client.get("/v0/webhook", headers=tenant.headers).json()["info"]["set"] is False


def test_a_public_address_is_accepted_when_set(strict_client, tenant):
    answer = strict_client.put("/v0/webhook", json={"url": "https://93.184.216.34/hooks"},
                               headers=tenant.headers)
    assert answer.status_code == 200


def test_allow_private_keeps_the_scheme_rule(client, tenant):
    answer = client.put("/v0/webhook", json={"url": "file:///etc/passwd"}, headers=tenant.headers)
    assert answer.status_code == 422


def test_deliveries_list_is_empty_for_unknown_or_malformed_contact_ids(client, tenant):
    for params in ({}, {"contact_id": "ct_nope"}, {"contact_id": "\x00junk"}):
        answer = client.get("/v0/webhook/deliveries", params=params, headers=tenant.headers)
        assert answer.status_code == 200 and answer.json() == {"info": []}


def test_concurrent_first_sets_make_one_secret(client, tenant):
    from concurrent.futures import ThreadPoolExecutor

    def put(n: int) -> httpx.Response:
        return client.put("/v0/webhook", json={"url": f"http://127.0.0.1:9/{n}"},
                          headers=tenant.headers)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(put, range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert sum(1 for a in answers if a.json()["info"]["secret"]) == 1
