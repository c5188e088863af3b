"""Reading Twilio's answer (its Regulations and a number's `address_requirements`) as a rule,
and when a cached rule may judge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.domain.regulatory import Rule, rule_from_twilio, strictest, usable

PROOF = [[{"requirement_name": "proof_of_address", "type": "document"}]]
BUSINESS = [{"type": "business", "requirement_name": "business_info"}]


def regulation(supporting=PROOF, end_user=BUSINESS):
    return {"sid": "RN1", "requirements": {"end_user": end_user, "supporting_document": supporting}}


def test_a_listed_regulation_means_a_bundle_and_the_number_list_says_where_the_address_is():
    assert rule_from_twilio([regulation()], "local") == Rule(True, "local")
    assert rule_from_twilio([], "none") == Rule(False, "none")
    assert rule_from_twilio([], "any") == Rule(False, "any")  # an address without a bundle


def test_without_a_number_to_read_a_proof_of_address_stands_for_any_address():
    assert rule_from_twilio([regulation()], None) == Rule(True, "any")
    assert rule_from_twilio([regulation(supporting=[])], None) == Rule(True, "none")
    assert rule_from_twilio([], "nonsense") == Rule(False, "none")


def test_a_regulation_with_no_requirements_needs_no_bundle():
    assert rule_from_twilio([regulation(supporting=[], end_user=[])], "none") == Rule(False, "none")


def test_a_stale_or_too_old_entry_is_not_used():
    now = datetime(2026, 12, 7, tzinfo=UTC)
    assert usable(now - timedelta(seconds=100), False, now, 100)
    assert not usable(now - timedelta(seconds=101), False, now, 100)
    assert not usable(now, True, now, 100)


def test_the_strictest_rule_needs_documents_when_any_does():
    assert strictest([]) is None
    assert strictest([Rule(False, "none")]) == Rule(False, "none")
    assert strictest([Rule(False, "none"), Rule(True, "local")]) == Rule(True, "local")
    assert strictest([Rule(False, "any"), Rule(True, "none")]) == Rule(True, "any")
