from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.domain.errors import IdempotencyKeyInFlight, IdempotencyKeyReused, InvalidRequest
from worker.domain.idempotency import Decision, KeyRecord, check_key, decide, fingerprint

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LOCK = timedelta(seconds=60)


def record(fp="a", completed=False, locked=NOW, expires=NOW + timedelta(hours=24)):
    return KeyRecord(fp, completed, locked, expires)


def test_no_record_or_expired_record_proceeds():
    assert decide(None, "a", NOW, LOCK) is Decision.PROCEED
    assert decide(record(expires=NOW), "b", NOW, LOCK) is Decision.PROCEED


def test_completed_same_request_replays():
    assert decide(record(completed=True), "a", NOW, LOCK) is Decision.REPLAY


def test_other_request_is_refused_even_when_completed():
    with pytest.raises(IdempotencyKeyReused):
        decide(record(completed=True), "b", NOW, LOCK)


def test_in_flight_is_refused_until_the_lock_times_out():
    with pytest.raises(IdempotencyKeyInFlight):
        decide(record(), "a", NOW + timedelta(seconds=59), LOCK)
    assert decide(record(), "a", NOW + timedelta(seconds=61), LOCK) is Decision.TAKE_OVER


def test_fingerprint_separates_route_and_body():
    base = fingerprint("POST", "/v0/assistant/1/contact", b"{}")
    assert base == fingerprint("post", "/v0/assistant/1/contact", b"{}")
    assert base != fingerprint("POST", "/v0/assistant/2/contact", b"{}")
    assert base != fingerprint("POST", "/v0/assistant/1/contact", b"{ }")


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "a\nb"])
def test_bad_keys_are_refused(key):
    with pytest.raises(InvalidRequest):
        check_key(key)
