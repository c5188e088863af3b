"""The shared number pool: one AvailablePhoneNumbers search serves many purchases, against real
Redis and the sandbox's Twilio over HTTP. Each candidate goes to one taker, a stale one is not
offered, a number sold since the search takes the next, and without Redis every contact still
gets its number by searching for itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import phonenumbers
import pytest
from support.invariants import check_invariants
from support.pipeline import drive, submit
from test_steps_in_process import PHONE

from worker.providers import Providers
from worker.providers.twilio_numbers import TwilioNumbers
from worker.runtime.number_pool import NumberPool, PoolKey, Unmet
from worker.runtime.pipeline import Pipeline


@pytest.fixture
def numbers(psettings) -> Iterator[TwilioNumbers]:
    client = TwilioNumbers.from_settings(psettings)
    yield client
    client.close()


def make_pool(psettings, **options) -> NumberPool:
    values = {"search_size": 50, "low_water": 50, "max_age_s": 300.0, "wait_s": 2.0, **options}
    return NumberPool(psettings.redis_url, **values)


def searches(sandbox) -> int:
    return int(sandbox.stats()["calls"].get("twilio.search", 0))


def key(numbers: TwilioNumbers, country: str = "US", number_list: str = "Local") -> PoolKey:
    return PoolKey(numbers.connection, country, number_list)


def search_of(numbers: TwilioNumbers, pool: NumberPool, country="US", number_list="Local"):
    return lambda: numbers.search(country, number_list, pool.search_size)


def test_one_search_serves_many_purchases(service, pipeline, make_tenant, sandbox, db):
    assert pipeline.number_pool is not None, "the pool is on by default"
    tenant = make_tenant(assistants=30)
    cids = [submit(service, tenant, PHONE, a) for a in tenant.assistant_ids]
    for cid in cids:
        assert drive(pipeline, cid) == "active"
    pipeline.number_pool.settle()
    calls = sandbox.stats()["calls"]
    # One search filled the pool; one background search topped it up below the low water.
    assert calls.get("twilio.search", 0) <= 2, calls
    assert calls["twilio.buy"] == 30, calls
    assert (calls["twilio.search"] + calls["twilio.buy"]) / 30 <= 1.1
    bought = [n["address"] for n in sandbox.resources()["phone_numbers"]]
    assert len(set(bought)) == 30
    assert check_invariants(db, sandbox) == {"active": 30}


def test_concurrent_takers_never_share_a_candidate(psettings, numbers, sandbox):
    pool = make_pool(psettings, low_water=20)
    taken: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def taker() -> None:
        start.wait()
        for _ in range(10):
            number = pool.take(key(numbers), ["none"], search_of(numbers, pool))
            assert number is not None
            with lock:
                taken.append(number)

    threads = [threading.Thread(target=taker) for _ in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        pool.settle()
    finally:
        pool.close()
    assert len(taken) == 160
    assert len(set(taken)) == 160, "a candidate went to two takers"
    # 16 takers met an empty pool at once: one searched, the others waited for its numbers.
    # 160 candidates at 50 a search is at least 4 searches; a taker's own search is rare.
    assert 4 <= searches(sandbox) <= 6, sandbox.stats()["calls"]


def test_a_candidate_past_its_age_is_not_offered(psettings, numbers, sandbox):
    pool = make_pool(psettings, max_age_s=0.5, low_water=0)
    try:
        first = pool.take(key(numbers), ["none"], search_of(numbers, pool))
        assert searches(sandbox) == 1
        assert pool.take(key(numbers), ["none"], search_of(numbers, pool)) not in (None, first)
        assert searches(sandbox) == 1  # served from the pool
        time.sleep(0.7)
        # Every candidate is now older than its age limit: a new search is made for this one.
        assert pool.take(key(numbers), ["none"], search_of(numbers, pool)) is not None
        assert searches(sandbox) == 2
    finally:
        pool.close()


def test_a_number_taken_is_not_put_back_by_a_later_search(psettings, numbers, sandbox):
    pool = make_pool(psettings, low_water=0)
    try:
        found = numbers.search("US", "Local", 5)
        offered = iter([found, found])  # the same five numbers offered twice

        def search():
            return next(offered)

        first = pool.take(key(numbers), ["none"], search)
        # The first taker may still be buying `first`: a second search that offers it again
        # must not hand it to someone else.
        assert pool._put(key(numbers), search()) == 4
        rest = [pool.take(key(numbers), ["none"], lambda: []) for _ in range(4)]
        assert first not in rest and len(set(rest)) == 4
    finally:
        pool.close()


def test_a_number_sold_since_the_search_is_skipped_for_the_next(
    service, pipeline, make_tenant, sandbox, db, numbers
):
    tenant = make_tenant(assistants=2)
    cid = submit(service, tenant, PHONE, tenant.assistant_ids[0])
    assert drive(pipeline, cid) == "active"
    pipeline.number_pool.settle()
    # Someone else buys the candidate the pool would offer next (Twilio holds nothing for a
    # search): the next contact meets 21422 and takes the one after it.
    redis = pipeline.number_pool._redis
    [(next_up, _)] = redis.zrange(key(numbers).requirement_key("none"), -1, -1, withscores=True)
    numbers.buy(next_up.decode(), "someone-else")
    other = submit(service, tenant, PHONE, tenant.assistant_ids[1])
    assert drive(pipeline, other) == "active"
    mine = {n["address"]: n["tag"] for n in sandbox.resources()["phone_numbers"]}
    assert mine[next_up.decode()] == "someone-else"
    assert sorted(t for t in mine.values() if t != "someone-else") == sorted([cid, other])
    # Someone else's, ours twice, and ours refused with 21422.
    assert sandbox.stats()["calls"]["twilio.buy"] == 4


def test_pools_are_kept_apart_by_country_and_list(psettings, numbers, sandbox):
    pool = make_pool(psettings, low_water=0)
    try:
        us = pool.take(key(numbers, "US"), ["none"], search_of(numbers, pool, "US"))
        ca = pool.take(key(numbers, "CA"), ["none"], search_of(numbers, pool, "CA"))
        free = pool.take(
            key(numbers, "US", "TollFree"), ["none"], search_of(numbers, pool, "US", "TollFree")
        )
    finally:
        pool.close()
    assert phonenumbers.region_code_for_number(phonenumbers.parse(us)) == "US"
    assert phonenumbers.region_code_for_number(phonenumbers.parse(ca)) == "CA"
    kind = phonenumbers.number_type(phonenumbers.parse(free))
    assert kind == phonenumbers.PhoneNumberType.TOLL_FREE
    assert searches(sandbox) == 3


def test_documents_that_meet_no_number_offered_are_refused_with_the_requirement(
    psettings, numbers, sandbox
):
    pool = make_pool(psettings)
    try:
        # German local numbers need a local address: a contact without one can take none.
        with pytest.raises(Unmet) as refused:
            pool.take(key(numbers, "DE"), ["none"], search_of(numbers, pool, "DE"))
        assert refused.value.requirements == ["local"]
        # A contact with a German address takes one of the numbers that search found.
        taken = pool.take(key(numbers, "DE"), ["none", "any", "local"], lambda: [])
        assert taken is not None and taken.startswith("+49")
        assert searches(sandbox) == 1
    finally:
        pool.close()


def test_without_redis_each_contact_searches_for_itself(
    service, psettings, make_tenant, sandbox, db
):
    tenant = make_tenant(assistants=3)
    providers = Providers.from_settings(psettings)
    # Nothing listens on port 1: every pool request fails at once.
    dead = NumberPool("redis://127.0.0.1:1/0", wait_s=0.1)
    pipeline = Pipeline(db, providers, psettings, number_pool=dead)
    try:
        cids = [submit(service, tenant, PHONE, a) for a in tenant.assistant_ids]
        assert [drive(pipeline, cid) for cid in cids] == ["active"] * 3
    finally:
        pipeline.close()
        providers.close()
    calls = sandbox.stats()["calls"]
    assert (calls["twilio.search"], calls["twilio.buy"]) == (3, 3)
    assert check_invariants(db, sandbox) == {"active": 3}
