"""Twilio's own Python SDK, unchanged, against the sandbox: a regulatory bundle and an address
are made, and a GB number is bought against them, as a customer would at Twilio.

The SDK builds absolute URLs on api.twilio.com and numbers.twilio.com; its documented
extension point, a custom `HttpClient`, sends them to the sandbox's one base URL instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sandbox_http import ACCOUNT
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from sandbox.testing import SandboxControl


class SandboxHttpClient(TwilioHttpClient):
    """Sends every `https://<product>.twilio.com` request to the sandbox."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=10)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(self.base_url + "/"):  # a page URL the sandbox wrote (`meta`)
            return super().request(method, url, *args, **kwargs)
        scheme, _, rest = url.partition("://")
        host, _, path = rest.partition("/")
        assert scheme == "https" and host.endswith(".twilio.com"), url
        return super().request(method, f"{self.base_url}/{path}", *args, **kwargs)


@pytest.fixture
def client(sandbox: SandboxControl) -> Iterator[Client]:
    yield Client(ACCOUNT, "token", http_client=SandboxHttpClient(sandbox.url))


def _approved_bundle(client: Client, sandbox: SandboxControl, country: str, kind: str) -> str:
    compliance = client.numbers.v2.regulatory_compliance
    regulations = compliance.regulations.list(
        iso_country=country, number_type=kind, end_user_type="business"
    )
    assert len(regulations) == 1 and regulations[0].iso_country == country
    bundle = compliance.bundles.create(
        friendly_name="Acme Ltd", email="ops@acme.example", regulation_sid=regulations[0].sid
    )
    assert bundle.status == "draft"
    submitted = compliance.bundles(bundle.sid).update(status="pending-review")
    assert submitted.status == "pending-review"
    assert sandbox.approve_bundle(bundle.sid)["status"] == "twilio-approved"
    assert compliance.bundles(bundle.sid).fetch().status == "twilio-approved"
    return str(bundle.sid)


def test_sdk_buys_a_gb_number_with_its_bundle_and_address(
    client: Client, sandbox: SandboxControl
) -> None:
    bundle_sid = _approved_bundle(client, sandbox, "GB", "local")
    address = client.addresses.create(
        customer_name="Acme Ltd",
        street="1 High Street",
        city="London",
        region="London",
        postal_code="sw1a 1aa",  # corrected by Twilio's AutoCorrectAddress (default true)
        iso_country="GB",
    )
    assert address.sid.startswith("AD") and address.validated is True
    assert address.postal_code == "SW1A 1AA"
    offered = client.available_phone_numbers("GB").local.list(limit=3)
    assert offered and all(n.address_requirements == "any" for n in offered)

    with pytest.raises(TwilioRestException) as refused:
        client.incoming_phone_numbers.create(phone_number=offered[0].phone_number)
    assert refused.value.code == 21649

    number = client.incoming_phone_numbers.create(
        phone_number=offered[0].phone_number,
        friendly_name="ct_sdk",
        address_sid=address.sid,
        bundle_sid=bundle_sid,
    )
    assert number.bundle_sid == bundle_sid and number.address_sid == address.sid
    assert number.address_requirements == "any"
    [held] = [n for n in sandbox.resources()["phone_numbers"] if n["tag"] == "ct_sdk"]
    assert held["bundle_sid"] == bundle_sid and held["address_sid"] == address.sid
    assert held["address"] == offered[0].phone_number


def test_sdk_sees_the_address_rules_of_a_german_local_number(
    client: Client, sandbox: SandboxControl
) -> None:
    bundle_sid = _approved_bundle(client, sandbox, "DE", "local")
    london = client.addresses.create(
        customer_name="Acme Ltd",
        street="1 High Street",
        city="London",
        region="London",
        postal_code="SW1A 1AA",
        iso_country="GB",
    )
    [offered] = client.available_phone_numbers("DE").local.list(limit=1)
    assert offered.address_requirements == "local"
    with pytest.raises(TwilioRestException) as refused:
        client.incoming_phone_numbers.create(
            phone_number=offered.phone_number, address_sid=london.sid, bundle_sid=bundle_sid
        )
    assert refused.value.code == 21631  # a local number wants an address in Germany
    with pytest.raises(TwilioRestException) as invalid:
        client.addresses.create(
            customer_name="Acme GmbH",
            street="Unter den Linden 1",
            city="Berlin",
            region="Berlin",
            postal_code="1011",
            iso_country="DE",
        )
    assert invalid.value.code == 21628
    berlin = client.addresses.create(
        customer_name="Acme GmbH",
        street="Unter den Linden 1",
        city="Berlin",
        region="Berlin",
        postal_code="10117",
        iso_country="DE",
    )
    number = client.incoming_phone_numbers.create(
        phone_number=offered.phone_number, address_sid=berlin.sid, bundle_sid=bundle_sid
    )
    assert number.address_requirements == "local" and number.bundle_sid == bundle_sid


def test_sdk_lists_the_regulations_page_by_page_and_sees_a_rule_change(
    client: Client, sandbox: SandboxControl
) -> None:
    compliance = client.numbers.v2.regulatory_compliance
    # Page by page through the v2 envelope's `meta.next_page_url`, as the SDK follows it.
    gb = compliance.regulations.list(iso_country="GB", page_size=3)
    assert len(gb) == 8 and {r.iso_country for r in gb} == {"GB"}
    assert {r.number_type for r in gb} == {"local", "mobile", "national", "toll-free"}
    regulation = gb[0]
    assert regulation.sid.startswith("RN") and regulation.url.endswith(regulation.sid)
    assert regulation.requirements["supporting_document"][0][0]["requirement_name"] == (
        "proof_of_address"
    )
    assert compliance.regulations(regulation.sid).fetch().friendly_name == regulation.friendly_name
    assert compliance.regulations.list(iso_country="US") == []

    sandbox.set_regulation("US", "toll-free", bundle=True, address="any")
    [business] = compliance.regulations.list(
        iso_country="US", number_type="toll-free", end_user_type="business"
    )
    assert business.friendly_name == "United States: Toll-free - Business"


def test_sdk_reads_which_number_lists_each_country_has(client: Client) -> None:
    # Twilio's AvailablePhoneNumberCountry resource: where the number types a country sells
    # are stated (its `subresource_uris`), fetched one country at a time or listed.
    gb = client.available_phone_numbers("GB").fetch()
    assert (gb.country_code, gb.country, gb.beta) == ("GB", "United Kingdom", False)
    assert set(gb.subresource_uris) == {"local", "mobile", "national", "toll_free"}
    assert gb.subresource_uris["toll_free"].endswith("/AvailablePhoneNumbers/GB/TollFree.json")
    us = client.available_phone_numbers("US").fetch()
    assert set(us.subresource_uris) == {"local", "toll_free"}  # no Mobile or National list
    # The list the SDK follows from the country answers as the country said.
    assert client.available_phone_numbers("US").toll_free.list(limit=1)
    with pytest.raises(TwilioRestException) as unknown:
        client.available_phone_numbers("ZZ").fetch()
    assert unknown.value.status == 404
    listed = {c.country_code: c for c in client.available_phone_numbers.list()}
    assert {"US", "CA", "GB", "DE", "FR", "AU", "IE"} <= set(listed)
    assert listed["DE"].subresource_uris == client.available_phone_numbers("DE").fetch(
    ).subresource_uris
