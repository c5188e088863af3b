"""Our regulatory table and Twilio clients against the sandbox's emulated Twilio (a separate
table of its own): they agree on what every country and number type needs, and
`verify_documents` reads bundles, regulations and addresses as Twilio answers them."""

from __future__ import annotations

import httpx
import pytest

from worker.domain.regulatory import NUMBER_LIST, NUMBER_TYPES, RULES, TWILIO_NUMBER_TYPE
from worker.providers import NotFound, TwilioNumbers
from worker.providers.twilio_regulatory import DocumentRefused, verify_documents


def test_the_domain_table_agrees_with_twilios_lists_and_regulations(
    sandbox, provider_settings
) -> None:
    # The sandbox builds each list's inventory on its first search: no latency is measured.
    settings = provider_settings(provider_read_timeout_s=30.0)
    auth = (settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value())
    with TwilioNumbers.from_settings(settings) as numbers, httpx.Client(
        base_url=settings.twilio_numbers_url, auth=auth, timeout=30
    ) as twilio:
        for country, types in RULES.items():
            # Twilio's country resource lists the same number types as the table.
            assert set(numbers.number_types(country)) == set(types), country
            for kind in NUMBER_TYPES:
                rule = types.get(kind)
                if rule is None:
                    with pytest.raises(NotFound):  # Twilio has no such list there
                        numbers.search(country, NUMBER_LIST[kind], 1)
                    continue
                [offered] = numbers.search(country, NUMBER_LIST[kind], 1)
                assert offered.address_requirements == rule.address, (country, kind)
                found = twilio.get("/v2/RegulatoryCompliance/Regulations", params={
                    "IsoCountry": country, "NumberType": TWILIO_NUMBER_TYPE[kind]}).json()
                assert bool(found["results"]) == rule.bundle, (country, kind)


def test_verify_documents_reads_the_bundle_its_regulation_and_the_address(
    sandbox, provider_settings
) -> None:
    settings = provider_settings()
    auth = (settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value())
    with httpx.Client(base_url=sandbox.url, auth=auth, timeout=5) as twilio:
        bundle = twilio.post("/v2/RegulatoryCompliance/Bundles", data={
            "FriendlyName": "A", "Email": "a@example.com", "IsoCountry": "FR",
            "NumberType": "local", "EndUserType": "individual"}).json()["sid"]
        twilio.post(f"/v2/RegulatoryCompliance/Bundles/{bundle}", data={"Status": "pending-review"})
        address = twilio.post(
            f"/2010-04-01/Accounts/{settings.twilio_account_sid}/Addresses.json",
            data={"CustomerName": "A", "Street": "1 rue de Rivoli", "City": "Paris",
                  "Region": "IDF", "PostalCode": "75001", "IsoCountry": "FR"}).json()["sid"]
    with pytest.raises(DocumentRefused) as pending:
        verify_documents(settings, "FR", "local", bundle, address)
    assert pending.value.field == "bundle_sid"
    sandbox.approve_bundle(bundle)
    learnt = verify_documents(settings, "FR", "local", bundle, address)
    assert learnt["address_country"] == "FR" and learnt["bundle_status"] == "twilio-approved"
    assert learnt["end_user_type"] == "individual"
    sandbox.invalidate_address(address)
    with pytest.raises(DocumentRefused) as invalid:
        verify_documents(settings, "FR", "local", bundle, address)
    assert invalid.value.field == "address_sid"
    assert verify_documents(settings, "US", "local", None, None) == {}
