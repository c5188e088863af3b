from __future__ import annotations

import pytest

from worker.domain.contacts import ContactType
from worker.domain.errors import InvalidRequest
from worker.domain.validation import validate_contact_request


def fields_of(body):
    with pytest.raises(InvalidRequest) as caught:
        validate_contact_request(body)
    return caught.value.fields


def test_phone_numbers_are_normalised_to_e164():
    request = validate_contact_request(
        {"contact_type": "phone", "phone_country": "gb", "user_phone": " +44 20 7183 8750 "})
    assert request.contact_type is ContactType.PHONE
    assert request.fields == {"phone_country": "GB", "user_phone": "+442071838750",
                              "phone_number_type": "local"}


def test_uk_is_not_a_country_code():
    assert set(fields_of({"contact_type": "phone", "phone_country": "UK"})) == {"phone_country"}


def test_possible_but_invalid_number_is_refused():
    # Right length for the US, but 555 is not an area code.
    assert "user_phone" in fields_of({"contact_type": "phone", "user_phone": "+15551234567"})


def test_every_bad_field_is_reported_at_once():
    assert set(fields_of({"contact_type": "email", "email_local": "a..b", "first_name": ""})) == {
        "email_local", "first_name", "last_name"}


@pytest.mark.parametrize("local", ["ada", "a.b", "o'brien", "x_y-z", "a" * 64, "A1"])
def test_google_usernames_accepted(local):
    request = validate_contact_request(
        {"contact_type": "email", "email_local": local, "first_name": "A", "last_name": "B"})
    assert request.fields["email_local"] == local.lower()


@pytest.mark.parametrize("local", [".a", "a.", "a..b", "a b", "a@b", "a+b", "", "a" * 65, "é"])
def test_google_usernames_refused(local):
    assert "email_local" in fields_of(
        {"contact_type": "email", "email_local": local, "first_name": "A", "last_name": "B"})


def test_non_string_fields_are_named():
    assert fields_of({"contact_type": "phone", "user_phone": 14155552671}) == {
        "user_phone": "must be a string or null"}
