"""Numbers outside the US end to end: regulatory documents made at the sandbox's Twilio and set
through the API (checked there), phone contacts posted to the API and bought by a real worker
process with their bundle and address; refusals before anything is reserved, and a purchase
Twilio refuses ending failed with nothing left behind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.invariants import check_invariants
from support.pipeline import FAST, all_terminal, wait_for
from support.services import serve_in_thread

from sandbox.testing import SandboxControl

BUNDLES = "/v2/RegulatoryCompliance/Bundles"


@pytest.fixture
def rsettings(make_settings, sandbox):
    return make_settings(sandbox_url=sandbox.url, **FAST)


@pytest.fixture
def api(rsettings, db) -> Iterator[httpx.Client]:
    from api_stub.app import create_app

    with serve_in_thread(create_app(rsettings, db=db)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture
def twilio(rsettings, sandbox: SandboxControl) -> Iterator[httpx.Client]:
    """The platform's Twilio account at the sandbox, as its owner sees it."""
    auth = (rsettings.twilio_account_sid, rsettings.twilio_auth_token.get_secret_value())
    with httpx.Client(base_url=sandbox.url, auth=auth, timeout=10) as client:
        yield client


def make_bundle(twilio, sandbox, country: str, kind: str = "local", approve: bool = True) -> str:
    made = twilio.post(BUNDLES, data={
        "FriendlyName": "Acme", "Email": "ops@acme.example", "IsoCountry": country,
        "NumberType": kind, "EndUserType": "business"})
    assert made.status_code == 201, made.text
    sid = made.json()["sid"]
    if approve:
        twilio.post(f"{BUNDLES}/{sid}", data={"Status": "pending-review"}).raise_for_status()
        sandbox.approve_bundle(sid)
    return str(sid)


def make_address(twilio, rsettings, country: str, postal_code: str) -> str:
    made = twilio.post(f"/2010-04-01/Accounts/{rsettings.twilio_account_sid}/Addresses.json", data={
        "CustomerName": "Acme", "Street": "1 Main Street", "City": "Town", "Region": "R",
        "PostalCode": postal_code, "IsoCountry": country})
    assert made.status_code == 201, made.text
    return str(made.json()["sid"])


def put_docs(api, tenant, country: str, **body: Any) -> httpx.Response:
    return api.put(f"/v0/providers/twilio/regulatory/{country}", headers=tenant.headers,
                   json={"number_type": "local", **body})


def post(api, tenant, assistant: int, **body: Any) -> httpx.Response:
    return api.post(f"/v0/assistant/{assistant}/contact", headers=tenant.headers,
                    json={"contact_type": "phone", "user_phone": "+14155552671", **body})


def contact(api, tenant, info) -> dict[str, Any]:
    answer = api.get(f"/v0/assistant/{info['assistant_id']}/contact/{info['id']}",
                     headers=tenant.headers)
    return answer.json()["info"]


def test_gb_and_de_contacts_go_active_with_their_documents_and_us_needs_none(
    api, twilio, spawn, rsettings, make_tenant, sandbox, db
):
    tenant = make_tenant(assistants=3)
    gb_bundle = make_bundle(twilio, sandbox, "GB")
    gb_address = make_address(twilio, rsettings, "GB", "SW1A 1AA")
    de_bundle = make_bundle(twilio, sandbox, "DE")
    de_address = make_address(twilio, rsettings, "DE", "10117")
    gb = put_docs(api, tenant, "GB", bundle_sid=gb_bundle, address_sid=gb_address)
    assert gb.status_code == 200, gb.text
    assert gb.json()["info"]["bundle_status"] == "twilio-approved"
    assert gb.json()["info"]["address_country"] == "GB"
    assert put_docs(api, tenant, "de", bundle_sid=de_bundle,
                    address_sid=de_address).status_code == 200
    listed = api.get("/v0/providers/twilio/regulatory", headers=tenant.headers).json()["info"]
    assert [(d["country"], d["number_type"]) for d in listed] == [("DE", "local"), ("GB", "local")]

    a, b, c = tenant.assistant_ids
    posted = [post(api, tenant, a, phone_country="GB"), post(api, tenant, b, phone_country="DE"),
              post(api, tenant, c, phone_country="US")]
    assert [p.status_code for p in posted] == [202, 202, 202], [p.text for p in posted]
    infos = [p.json()["info"] for p in posted]
    assert infos[0]["request"]["bundle_sid"] == gb_bundle
    assert infos[2]["request"].get("bundle_sid") is None
    spawn("worker", rsettings, "--concurrency", "4")
    wait_for(lambda: all_terminal(db, 3), timeout=60)
    done = [contact(api, tenant, info) for info in infos]
    assert [d["status"] for d in done] == ["active"] * 3, [d["error"] for d in done]
    assert done[0]["address"].startswith("+44") and done[1]["address"].startswith("+49")
    held = {n["tag"]: n for n in sandbox.resources()["phone_numbers"]}
    assert (held[infos[0]["id"]]["bundle_sid"], held[infos[0]["id"]]["address_sid"]) == (
        gb_bundle, gb_address)
    assert (held[infos[1]["id"]]["bundle_sid"], held[infos[1]["id"]]["address_sid"]) == (
        de_bundle, de_address)
    assert (held[infos[2]["id"]]["bundle_sid"], held[infos[2]["id"]]["address_sid"]) == (None, None)
    assert check_invariants(db, sandbox) == {"active": 3}

    # The documents of a live number cannot go; once it is deleted they can.
    in_use = api.delete("/v0/providers/twilio/regulatory/GB?number_type=local",
                        headers=tenant.headers)
    assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "regulatory_in_use"
    api.delete(f"/v0/assistant/{a}/contact/{infos[0]['id']}", headers=tenant.headers)
    wait_for(lambda: contact(api, tenant, infos[0])["status"] == "deleted", timeout=60)
    gone = api.delete("/v0/providers/twilio/regulatory/GB?number_type=local",
                      headers=tenant.headers)
    assert gone.status_code == 204


def test_a_missing_bundle_is_refused_before_anything_is_reserved(
    api, make_tenant, sandbox, db
):
    tenant = make_tenant(credits_cents=1_000)
    before = api.get("/v0/credits", headers=tenant.headers).json()["info"]
    answer = post(api, tenant, tenant.assistant_ids[0], phone_country="DE")
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "regulatory_bundle_required"
    assert "phone_country" in error["fields"] and "bundle" in error["message"]
    assert api.get("/v0/credits", headers=tenant.headers).json()["info"] == before
    listed = api.get(f"/v0/assistant/{tenant.assistant_ids[0]}/contact", headers=tenant.headers)
    assert listed.json()["info"] == []
    wrong_type = post(api, tenant, tenant.assistant_ids[0], phone_country="US",
                      phone_number_type="mobile")
    assert wrong_type.status_code == 422
    assert "phone_number_type" in wrong_type.json()["error"]["fields"]
    batch = api.post("/v0/contact/batch", headers=tenant.headers, json={"items": [
        {"assistant_id": tenant.assistant_ids[0], "contact_type": "phone", "phone_country": "GB"}]})
    [rejected] = batch.json()["info"]["rejected"]
    assert rejected["error"]["code"] == "regulatory_bundle_required"
    assert api.get("/v0/credits", headers=tenant.headers).json()["info"] == before


def test_documents_twilio_refutes_are_a_422_naming_the_field(
    api, twilio, rsettings, make_tenant, sandbox
):
    tenant = make_tenant()
    draft = make_bundle(twilio, sandbox, "DE", approve=False)
    mobile = make_bundle(twilio, sandbox, "DE", "mobile")
    de_local = make_bundle(twilio, sandbox, "DE")
    london = make_address(twilio, rsettings, "GB", "SW1A 1AA")
    berlin = make_address(twilio, rsettings, "DE", "10117")

    def refuted(**body: Any) -> dict[str, str]:
        answer = put_docs(api, tenant, "DE", **body)
        assert answer.status_code == 422, answer.text
        fields: dict[str, str] = answer.json()["error"]["fields"]
        return fields

    assert "not twilio-approved" in refuted(bundle_sid=draft, address_sid=berlin)["bundle_sid"]
    assert "mobile" in refuted(bundle_sid=mobile, address_sid=berlin)["bundle_sid"]
    assert "bundle_sid" in refuted(bundle_sid="BU" + "0" * 32, address_sid=berlin)
    assert "local address" in refuted(bundle_sid=de_local, address_sid=london)["address_sid"]
    assert "required" in refuted(address_sid=berlin)["bundle_sid"]
    assert "number_type" in refuted(number_type="pager")
    assert put_docs(api, tenant, "DE", bundle_sid=de_local, address_sid=berlin).status_code == 200


@pytest.mark.parametrize(("spoil", "code", "twilio_code"), [
    ("reject_bundle", "regulatory_bundle_refused", "21649"),  # Twilio's review rejects it
    ("invalidate_address", "regulatory_address_invalid", "21628"),  # it fails validation
])
def test_a_purchase_twilio_refuses_ends_failed_with_its_code_and_nothing_left(
    api, twilio, spawn, rsettings, make_tenant, sandbox, db, spoil, code, twilio_code
):
    tenant = make_tenant(credits_cents=1_000)
    bundle = make_bundle(twilio, sandbox, "GB")
    address = make_address(twilio, rsettings, "GB", "SW1A 1AA")
    assert put_docs(api, tenant, "GB", bundle_sid=bundle, address_sid=address).status_code == 200
    # After the documents were set and checked, Twilio changes its mind about one of them.
    if spoil == "reject_bundle":
        sandbox.reject_bundle(bundle)
    else:
        sandbox.invalidate_address(address)
    answer = post(api, tenant, tenant.assistant_ids[0], phone_country="GB")
    assert answer.status_code == 202, answer.text
    info = answer.json()["info"]
    spawn("worker", rsettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    failed = contact(api, tenant, info)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == code
    assert twilio_code in failed["error"]["message"]
    assert sandbox.resources()["phone_numbers"] == []
    credits = api.get("/v0/credits", headers=tenant.headers).json()["info"]
    assert credits == {"balance": "10.00", "reserved": "0.00", "available": "10.00"}
    assert check_invariants(db, sandbox) == {"failed": 1}


def test_the_platforms_default_documents_serve_an_account_that_has_none(
    make_settings, spawn, make_tenant, sandbox, db
):
    from api_stub.app import create_app

    plain = make_settings(sandbox_url=sandbox.url, **FAST)
    auth = (plain.twilio_account_sid, plain.twilio_auth_token.get_secret_value())
    with httpx.Client(base_url=sandbox.url, auth=auth, timeout=10) as twilio:
        bundle = make_bundle(twilio, sandbox, "GB", "mobile")
        address = make_address(twilio, plain, "IE", "D02 X285")  # `any` address: anywhere
    settings = make_settings(sandbox_url=sandbox.url, **FAST, twilio_regulatory_defaults={
        "GB/mobile": {"bundle_sid": bundle, "address_sid": address, "address_country": "IE"}})
    tenant = make_tenant()
    with serve_in_thread(create_app(settings, db=db)) as url, \
            httpx.Client(base_url=url, timeout=30) as api:
        answer = post(api, tenant, tenant.assistant_ids[0], phone_country="GB",
                      phone_number_type="mobile")
        assert answer.status_code == 202, answer.text
        info = answer.json()["info"]
        assert info["request"]["documents"] == "platform"
        spawn("worker", settings, "--concurrency", "2")
        wait_for(lambda: all_terminal(db, 1), timeout=60)
        done = contact(api, tenant, info)
    assert done["status"] == "active", done["error"]
    [number] = sandbox.resources()["phone_numbers"]
    assert (number["number_type"], number["bundle_sid"], number["address_sid"]) == (
        "mobile", bundle, address)
    assert done["address"].startswith("+447")


def test_the_fast_path_judges_a_regulated_request_as_the_ordinary_path_does(
    api, twilio, rsettings, make_tenant, sandbox, db
):
    tenant = make_tenant(assistants=3)
    a, b, c = tenant.assistant_ids
    # A plain US request first: the key is now one the fast path takes.
    assert post(api, tenant, a, phone_country="US").status_code == 202
    refused = post(api, tenant, b, phone_country="GB")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "regulatory_bundle_required"
    bundle = make_bundle(twilio, sandbox, "GB", "toll-free")
    address = make_address(twilio, rsettings, "GB", "SW1A 1AA")
    put = put_docs(api, tenant, "GB", number_type="toll_free", bundle_sid=bundle,
                   address_sid=address)
    assert put.status_code == 200, put.text
    still = post(api, tenant, b, phone_country="GB")  # local: still none
    assert still.json()["error"]["code"] == "regulatory_bundle_required"
    accepted = post(api, tenant, c, phone_country="GB", phone_number_type="toll_free")
    assert accepted.status_code == 202, accepted.text
    request = accepted.json()["info"]["request"]
    assert (request["documents"], request["bundle_sid"], request["address_sid"]) == (
        "account", bundle, address)
    credits = api.get("/v0/credits", headers=tenant.headers).json()["info"]
    assert credits["reserved"] == "2.00"  # the US and the toll-free contact only
