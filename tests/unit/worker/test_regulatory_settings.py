"""PROVISIONER_TWILIO_REGULATORY_DEFAULTS: JSON from the environment, checked at start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.settings import Settings


def test_the_platforms_documents_are_read_as_json_and_normalised(monkeypatch):
    monkeypatch.setenv(
        "PROVISIONER_TWILIO_REGULATORY_DEFAULTS",
        '{"gb/mobile": {"bundle_sid": "BU1", "address_sid": "AD1", "address_country": "ie"}}',
    )
    assert Settings().twilio_regulatory_defaults == {
        "GB/mobile": {"bundle_sid": "BU1", "address_sid": "AD1", "address_country": "IE"}}


@pytest.mark.parametrize("bad", [{"GB": {}}, {"GB/pager": {}}, {"GB/local": {"bundle": "BU1"}}])
def test_a_malformed_default_fails_at_start_naming_the_setting(bad):
    with pytest.raises(ValidationError, match="twilio_regulatory_defaults"):
        Settings(twilio_regulatory_defaults=bad)


def test_the_regulations_countries_are_read_from_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("PROVISIONER_TWILIO_REGULATIONS_COUNTRIES", " gb, de ,fr")
    assert Settings().regulation_countries == ("GB", "DE", "FR")
    assert Settings(twilio_regulations_countries="").regulation_countries == ()
    assert Settings().twilio_regulations_ttl_s == 86400.0  # a day, unless set


@pytest.mark.parametrize(("name", "value"), [
    ("twilio_regulations_countries", "GB,Germany"),
    ("twilio_regulations_ttl_s", 0),
    ("twilio_regulations_per_pass", -1),
    ("twilio_regulations_reload_s", 0),
])
def test_a_bad_regulations_setting_fails_at_start_naming_it(name, value):
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: value})
