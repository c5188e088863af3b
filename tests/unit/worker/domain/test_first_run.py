"""The first-run hint a provisioning message carries (worker.domain.contacts.FirstRun)."""

from __future__ import annotations

import pytest

from worker.domain.contacts import ContactType, FirstRun


def test_a_hint_goes_through_its_header_unchanged():
    for hint in (
        FirstRun(ContactType.PHONE, "GB", bulk=False),
        FirstRun(ContactType.WHATSAPP, None, bulk=True),
    ):
        assert FirstRun.from_header(hint.header()) == hint


def test_only_a_contact_whose_first_step_only_reads_gets_a_hint():
    assert FirstRun.of("phone", {"phone_country": "GB"}, bulk=True) == FirstRun(
        ContactType.PHONE, "GB", bulk=True
    )
    assert FirstRun.of("whatsapp", {}, bulk=False) == FirstRun(
        ContactType.WHATSAPP, None, bulk=False
    )
    assert FirstRun.of("email", {"email_local": "ada"}, bulk=False) is None
    assert FirstRun.of("email", {"provisioned_by": "user"}, bulk=False) is None


def test_the_hint_gives_the_search_its_country_or_nothing():
    assert FirstRun(ContactType.PHONE, "GB", bulk=False).request == {"phone_country": "GB"}
    assert FirstRun(ContactType.WHATSAPP, None, bulk=False).request == {}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "phone",
        {},
        {"type": "fax", "country": "US", "bulk": False},
        {"type": "email", "country": None, "bulk": False},  # its first step writes
        {"type": "phone", "country": "USA", "bulk": False},
        {"type": "phone", "country": 44, "bulk": False},
        {"type": "phone", "country": "US", "bulk": "no"},
        {"type": "phone", "country": "US"},
    ],
)
def test_a_hint_this_version_cannot_read_is_no_hint(header):
    assert FirstRun.from_header(header) is None
