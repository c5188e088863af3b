"""The Google Admin SDK Directory emulation (users insert, get, delete)."""

from __future__ import annotations

import httpx
from sandbox_http import USERS, user_body

from sandbox.testing import SandboxControl


def test_insert_returns_the_user_without_password(google: httpx.Client) -> None:
    response = google.post(USERS, json=user_body())
    assert response.status_code == 200
    user = response.json()
    assert user["kind"] == "admin#directory#user"
    assert user["id"].isdigit()
    assert user["primaryEmail"] == "ada@assistants.example.com"
    assert user["name"] == {
        "givenName": "Ada",
        "familyName": "Lovelace",
        "fullName": "Ada Lovelace",
    }
    assert user["externalIds"] == user_body()["externalIds"]
    assert user["creationTime"].endswith("Z")
    assert "password" not in user and "correct horse" not in response.text


def test_get_by_email_or_id_and_delete(sandbox: SandboxControl, google: httpx.Client) -> None:
    user = google.post(USERS, json=user_body()).json()
    assert google.get(f"{USERS}/{user['id']}").json()["primaryEmail"] == user["primaryEmail"]
    assert google.get(f"{USERS}/ADA@assistants.example.com").json()["id"] == user["id"]
    [listed] = sandbox.resources()["users"]
    assert listed["address"] == user["primaryEmail"] and listed["tag"] == "c_123"

    deleted = google.delete(f"{USERS}/{user['primaryEmail']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert sandbox.resources()["users"] == []


def test_unknown_user_is_not_found(google: httpx.Client) -> None:
    for response in (google.get(f"{USERS}/nobody@x.example.com"), google.delete(f"{USERS}/123")):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == 404 and error["errors"][0]["reason"] == "notFound"


def test_duplicate_primary_email_is_409(google: httpx.Client) -> None:
    google.post(USERS, json=user_body())
    response = google.post(USERS, json=user_body(email="Ada@Assistants.example.com"))
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": 409,
            "message": "Entity already exists.",
            "errors": [
                {"message": "Entity already exists.", "domain": "global", "reason": "duplicate"}
            ],
            "status": "ALREADY_EXISTS",
        }
    }


def test_invalid_fields_are_400_invalid(sandbox: SandboxControl, google: httpx.Client) -> None:
    bad = [
        user_body(password="short"),
        user_body(email="not-an-email"),
        user_body(email=".dot@assistants.example.com"),
        user_body(name={"givenName": "A" * 61, "familyName": "B"}),
        user_body(name={"givenName": "<b>", "familyName": "B"}),
        user_body(name={"givenName": "Ada"}),
        {k: v for k, v in user_body().items() if k != "password"},
        user_body(externalIds="c_1"),
    ]
    for body in bad:
        response = google.post(USERS, json=body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["code"] == 400 and error["errors"][0]["reason"] == "invalid"
    assert sandbox.resources()["users"] == []


def test_user_without_contact_external_id_has_no_tag(
    sandbox: SandboxControl, google: httpx.Client
) -> None:
    google.post(USERS, json=user_body(externalIds=[{"type": "organization", "value": "x"}]))
    assert sandbox.resources()["users"][0]["tag"] is None


def test_bearer_token_is_required(sandbox: SandboxControl) -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic dTpw"}):
        response = httpx.post(f"{sandbox.url}{USERS}", json=user_body(), headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["status"] == "UNAUTHENTICATED"
        assert error["errors"][0]["reason"] == "authError"
    assert sandbox.resources()["users"] == []
