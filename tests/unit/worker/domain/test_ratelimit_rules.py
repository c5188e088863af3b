"""Provider budgets: the settings' notation, which budgets a request draws on, when to return."""

from __future__ import annotations

import random

import pytest

from worker.domain.ratelimit import (
    Draw,
    Rate,
    come_back_in,
    draws_for,
    operation_of,
    parse_budgets,
    parse_rate,
)


def test_budgets_parse_providers_and_operations():
    assert parse_budgets(" twilio=50/second; google.user_insert = 600 per minute;") == {
        "twilio": Rate(50, 1), "google.user_insert": Rate(600, 60)}
    assert parse_budgets("") == {}
    assert parse_rate("10/2 seconds") == Rate(10, 2)


@pytest.mark.parametrize("spec", ["twilio", "twilio=fast", "twilio=0/second", "=5/second",
                                  "Twilio!=5/second", "twilio=5/second;twilio=6/second"])
def test_bad_budgets_are_refused(spec):
    with pytest.raises(ValueError):
        parse_budgets(spec)


@pytest.mark.parametrize(("method", "path", "operation"), [
    ("GET", "/2010-04-01/Accounts/AC1/AvailablePhoneNumbers/US/Local.json", "number_search"),
    ("POST", "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json", "number_buy"),
    ("GET", "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json", "number_read"),
    ("DELETE", "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers/PN1.json", "number_delete"),
    ("POST", "/v2/Channels/Senders", "sender_create"),
    ("GET", "/v2/Channels/Senders/XE1", "sender_fetch"),
    ("POST", "/admin/directory/v1/users", "user_insert"),
    ("GET", "/admin/directory/v1/users/a@b.c", "user_get"),
    ("DELETE", "/admin/directory/v1/users/a@b.c", "user_delete"),
    ("PATCH", "/elsewhere", "patch"),
])
def test_operations_are_named_from_method_and_path(method, path, operation):
    assert operation_of(method, path) == operation


def test_a_request_draws_on_its_provider_and_operation_budgets():
    budgets = {"twilio": Rate(50, 1), "twilio.number_buy": Rate(5, 1), "google": Rate(9, 1)}
    assert draws_for("twilio", "number_buy", bulk=False, budgets=budgets, bulk_share=0.8) == [
        Draw("twilio", Rate(50, 1)), Draw("twilio.number_buy", Rate(5, 1))]
    assert draws_for("twilio", "number_search", bulk=False, budgets=budgets,
                     bulk_share=0.8) == [Draw("twilio", Rate(50, 1))]
    assert draws_for("other", "get", bulk=True, budgets=budgets, bulk_share=0.8) == []


def test_bulk_work_draws_first_on_its_share_of_each_budget():
    budgets = {"google": Rate(10, 1), "google.user_insert": Rate(1, 1)}
    assert draws_for("google", "user_insert", bulk=True, budgets=budgets, bulk_share=0.75) == [
        Draw("google.user_insert:bulk", Rate(1, 1)), Draw("google:bulk", Rate(7, 1)),
        Draw("google", Rate(10, 1)), Draw("google.user_insert", Rate(1, 1))]
    assert draws_for("google", "user_get", bulk=True, budgets=budgets, bulk_share=1.0) == [
        Draw("google", Rate(10, 1))]


def test_come_back_after_the_wait_spread_over_at_least_a_second():
    rng = random.Random(7)
    delays = [come_back_in(0.3, Rate(5, 2), rng) for _ in range(200)]
    assert all(0.3 <= d <= 1.3 for d in delays)
    assert max(delays) - min(delays) > 0.7  # spread, not one instant for all
    # A long wait (many waiting) spreads as long, within the budget's period.
    assert all(6 <= come_back_in(6, Rate(10, 60), rng) <= 12 for _ in range(50))
    assert all(3 <= come_back_in(3, Rate(10, 2), rng) <= 5 for _ in range(50))
    assert come_back_in(-1, None, rng) <= 1.0
