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
