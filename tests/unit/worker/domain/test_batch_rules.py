"""Judging a batch: order of the rules per item, credits taken by index, duplicates in a batch."""

from __future__ import annotations

import pytest

from worker.domain.batch import items_of, judge, parse_item
from worker.domain.contacts import ContactType
from worker.domain.errors import InvalidRequest

COSTS = {ContactType.PHONE: 100, ContactType.EMAIL: 50, ContactType.WHATSAPP: 200}
PHONE = {"contact_type": "phone"}
EMAIL = {"contact_type": "email", "email_local": "ada", "first_name": "A", "last_name": "L"}


def run(raw_items, *, owned=(1, 2, 3), live=(), available=1_000):
    items = [parse_item(i, raw) for i, raw in enumerate(raw_items)]
    verdicts = judge(items, owned=owned, live=live, available_cents=available,
                     cost_of=COSTS.__getitem__)
    return ([i for i, *_ in verdicts.accepted],
            {i: e.code for i, e in verdicts.rejected}, verdicts.reserved_cents)


def test_credits_are_taken_by_index_and_a_later_cheaper_item_may_fit():
    accepted, rejected, reserved = run(
        [{"assistant_id": 1, **PHONE}, {"assistant_id": 2, "contact_type": "whatsapp",
                                        "user_whatsapp_number": "+442071838750"},
         {"assistant_id": 2, **EMAIL}], available=150)
    assert accepted == [0, 2] and rejected == {1: "insufficient_credits"} and reserved == 150


def test_unknown_assistant_outranks_a_bad_body_and_exists_outranks_credits():
    _, rejected, _ = run([{"assistant_id": 9, "contact_type": "fax"},
                          {"assistant_id": 1, **PHONE}], live=[(1, "phone")], available=0)
    assert rejected == {0: "not_found", 1: "contact_exists"}


def test_second_item_of_one_assistant_and_type_is_a_conflict():
    accepted, rejected, _ = run([{"assistant_id": 1, **PHONE}, {"assistant_id": 1, **PHONE}])
    assert accepted == [0] and rejected == {1: "contact_exists"}


@pytest.mark.parametrize("raw", [{"contact_type": "phone"}, {"assistant_id": "1", **PHONE},
                                 {"assistant_id": 0, **PHONE}, {"assistant_id": 2**63, **PHONE},
                                 {"assistant_id": False, **PHONE}, [1]])
def test_malformed_items_are_422(raw):
    item = parse_item(0, raw)
    assert isinstance(item.error, InvalidRequest)
    assert set(item.error.fields or {}) <= {"assistant_id", "item"}


@pytest.mark.parametrize("body", [[], {}, {"items": {}}, {"items": []}, {"items": [1] * 3}])
def test_bodies_that_are_not_batches_name_items_or_body(body):
    with pytest.raises(InvalidRequest) as raised:
        items_of(body, max_items=2)
    assert set(raised.value.fields or {}) in ({"items"}, {"body"})
