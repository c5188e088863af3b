"""The regulatory table and the judgement of an account's documents against it."""

from __future__ import annotations

from worker.domain.contacts import FirstRun
from worker.domain.regulatory import Documents, address_meets, missing, rule_for


def test_us_numbers_need_nothing_and_european_ones_a_bundle():
    assert not rule_for("US", "local").needs_documents
    assert rule_for("US", "mobile") is None  # the US has no Mobile list at Twilio
    assert rule_for("GB", "local").bundle and rule_for("GB", "local").address == "any"
    assert rule_for("DE", "local").address == "local"
    assert rule_for("ZW", "mobile") is not None  # countries outside the table are not judged


def test_missing_names_the_first_document_the_rule_lacks():
    de = rule_for("DE", "local")
    assert missing(de, "DE", None) == "bundle"
    assert missing(de, "DE", Documents("BU1")) == "address"
    assert missing(de, "DE", Documents("BU1", "AD1", "GB")) == "address"  # not local
    assert missing(de, "DE", Documents("BU1", "AD1", "DE")) is None
    assert missing(rule_for("GB", "mobile"), "GB", Documents("BU1", "AD1", "IE")) is None


def test_address_requirements():
    assert address_meets("none", "DE", None)
    assert not address_meets("any", "DE", None)
    assert address_meets("foreign", "DE", "FR") and not address_meets("foreign", "DE", "DE")


def test_a_request_with_documents_or_another_type_gets_no_hint():
    assert FirstRun.of("phone", {"phone_country": "US"}, bulk=False) is not None
    assert FirstRun.of("phone", {"phone_country": "US", "phone_number_type": "toll_free"},
                       bulk=False) is None
    assert FirstRun.of("phone", {"phone_country": "GB", "documents": "account"},
                       bulk=False) is None
