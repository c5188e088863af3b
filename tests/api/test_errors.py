"""Every row of the contract's error table, with the contract's error body."""

from __future__ import annotations

import pytest
from test_contacts import EMAIL, PHONE, WHATSAPP, post


def assert_error(response, status, code, fields=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if fields is not None:
        assert set(error["fields"]) == set(fields), error


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"},
])
def test_missing_or_wrong_key_is_401(client, tenant, headers):
    for method, path in [("POST", f"/v0/assistant/{tenant.assistant_ids[0]}/contact"),
                         ("GET", f"/v0/assistant/{tenant.assistant_ids[0]}/contact"),
                         ("GET", f"/v0/assistant/{tenant.assistant_ids[0]}/contact/ct_x"),
                         ("GET", "/v0/credits")]:
        response = client.request(method, path, json=PHONE, headers=headers)
        assert_error(response, 401, "unauthenticated")


def test_health_needs_no_key(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["info"] == {"database": "ok", "redis": "ok"}


def test_unknown_assistant_is_404(client, tenant):
    assert_error(post(client, tenant, PHONE, assistant=987654), 404, "not_found")
    assert_error(post(client, tenant, PHONE, assistant=2**70), 404, "not_found")


def test_assistant_and_contact_of_another_account_are_404(client, tenant, make_tenant):
    other = make_tenant(name="other")
    contact = post(client, other, PHONE).json()["info"]
    assert_error(post(client, tenant, PHONE, assistant=other.assistant_ids[0]), 404, "not_found")
    path = f"/v0/assistant/{other.assistant_ids[0]}/contact"
    assert_error(client.get(f"{path}/{contact['id']}", headers=tenant.headers), 404, "not_found")
    assert_error(client.get(path, headers=tenant.headers), 404, "not_found")
    # Another assistant of the right account does not see it either.
    mine = f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{contact['id']}"
    assert_error(client.get(mine, headers=tenant.headers), 404, "not_found")


@pytest.mark.parametrize("body, field", [
    ({"contact_type": "fax"}, "contact_type"),
    ({}, "contact_type"),
    ({"contact_type": 5}, "contact_type"),
    ({"contact_type": "phone", "phone_country": "UK"}, "phone_country"),
    ({"contact_type": "phone", "phone_country": "USA"}, "phone_country"),
    ({"contact_type": "phone", "user_phone": "4155552671"}, "user_phone"),
    ({"contact_type": "phone", "user_phone": "+15551234567"}, "user_phone"),
    ({"contact_type": "phone", "user_phone": "+1 not a number"}, "user_phone"),
    ({**EMAIL, "email_local": ".ada"}, "email_local"),
    ({**EMAIL, "email_local": "ada."}, "email_local"),
    ({**EMAIL, "email_local": "ada..lovelace"}, "email_local"),
    ({**EMAIL, "email_local": "ada+tag"}, "email_local"),
    ({**EMAIL, "email_local": "a" * 65}, "email_local"),
    ({**EMAIL, "email_local": None}, "email_local"),
    ({**EMAIL, "first_name": None}, "first_name"),
    ({**EMAIL, "last_name": "   "}, "last_name"),
    ({**EMAIL, "last_name": "<script>"}, "last_name"),
    ({**EMAIL, "first_name": "x" * 61}, "first_name"),
    ({"contact_type": "whatsapp"}, "user_whatsapp_number"),
    ({"contact_type": "whatsapp", "user_whatsapp_number": "+1"}, "user_whatsapp_number"),
])
def test_bad_body_is_422_naming_the_field(client, tenant, body, field):
    assert_error(post(client, tenant, body), 422, "invalid_request", [field])


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"", b'"phone"', b"{\"contact_type\":"])
def test_body_that_is_not_a_json_object_is_422(client, tenant, content):
    response = client.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact", content=content,
                           headers={**tenant.headers, "content-type": "application/json"})
    assert_error(response, 422, "invalid_request", ["body"])


def test_email_local_accepts_google_allowed_characters(client, tenant):
    response = post(client, tenant, {**EMAIL, "email_local": "o'brien_j-x.y"})
    assert response.status_code == 202, response.text


def test_insufficient_credits_is_402_and_reserves_nothing(client, make_tenant):
    poor = make_tenant(credits_cents=150)
    assert post(client, poor, PHONE).status_code == 202
    assert_error(post(client, poor, WHATSAPP), 402, "insufficient_credits")
    assert client.get("/v0/credits", headers=poor.headers).json()["info"] == {
        "balance": "1.50", "reserved": "1.00", "available": "0.50"}
    assert post(client, poor, EMAIL).status_code == 202


def test_second_live_contact_of_a_type_is_409(client, tenant):
    assert post(client, tenant, PHONE).status_code == 202
    assert_error(post(client, tenant, {"contact_type": "phone"}), 409, "contact_exists")
    credits = client.get("/v0/credits", headers=tenant.headers).json()["info"]
    assert credits["reserved"] == "1.00"


def test_body_over_64_kib_is_413(client, tenant):
    big = {**PHONE, "padding": "x" * (64 * 1024)}
    assert_error(post(client, tenant, big), 413, "payload_too_large")


def test_chunked_body_over_64_kib_is_413(client, tenant):
    def chunks():
        for _ in range(80):
            yield b"x" * 1024

    response = client.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact", content=chunks(),
                           headers={**tenant.headers, "content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")


def test_too_many_requests_for_one_key_is_429_with_retry_after(make_settings, db, make_tenant):
    import httpx
    from support.services import serve_in_thread

    from api_stub.app import create_app

    app = create_app(make_settings(rate_limit="3/minute"), db=db)
    tenant, other = make_tenant(), make_tenant(name="other")
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as http:
        statuses = [http.get("/v0/credits", headers=tenant.headers).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = http.get("/v0/credits", headers=tenant.headers)
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        assert http.get("/v0/credits", headers=other.headers).status_code == 200


def test_unknown_route_and_method_use_the_error_body(client, tenant):
    assert_error(client.get("/v0/nothing", headers=tenant.headers), 404, "not_found")
    response = client.delete("/v0/credits", headers=tenant.headers)
    assert_error(response, 405, "method_not_allowed")


def test_bad_query_and_path_parameters_are_422(client, tenant):
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"
    assert_error(client.get(path, params={"limit": 0}, headers=tenant.headers), 422,
                 "invalid_request", ["limit"])
    assert_error(client.get("/v0/assistant/abc/contact", headers=tenant.headers), 422,
                 "invalid_request", ["assistant_id"])


@pytest.mark.parametrize("bad", ["\x00", "ct_\x00", "x" * 500, "ct_" + "0" * 25 + "\x00"])
def test_malformed_ids_are_404_or_422_not_500(client, tenant, bad):
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"
    from urllib.parse import quote

    assert_error(client.get(f"{path}/{quote(bad)}", headers=tenant.headers), 404, "not_found")
    assert_error(client.get(path, params={"starting_after": bad}, headers=tenant.headers), 422,
                 "invalid_request", ["starting_after"])
