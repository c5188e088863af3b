"""Provider limits per connection, and the cap on requests in flight: a real worker keeps a
batch within the Twilio account's concurrency limit (the sandbox answers 20429 beyond it),
one connection's budget and 429 pause leave another's alone."""

from __future__ import annotations

import json
import threading
import time

from support.pipeline import all_terminal, statuses, wait_for
from test_steps_in_process import PHONE

from worker.app.batches import BatchService
from worker.domain.ratelimit import parse_budgets, parse_caps
from worker.runtime.budgets import ProviderLimiter, Throttled

ACCOUNT = "AC" + "c3" * 16


def test_a_budget_and_a_pause_hold_for_one_connection_only(redis_url):
    one = ProviderLimiter(redis_url, parse_budgets("microsoft=2/minute"))
    two = ProviderLimiter(redis_url, parse_budgets("microsoft=2/minute"))
    for _ in range(2):
        assert one.admit("microsoft", "user_insert", connection="microsoft:tenant-a") is None
    # Tenant A's budget is spent, in every worker; tenant B's is untouched.
    assert two.admit("microsoft", "user_insert", connection="microsoft:tenant-a") is not None
    assert two.admit("microsoft", "user_insert", connection="microsoft:tenant-b") is None

    one.pause("twilio", 5, "AC1")
    assert one.admit("twilio", "number_buy", connection="AC1") is not None
    assert one.admit("twilio", "number_buy", connection="AC2") is None


def test_the_cap_bounds_requests_in_flight_across_workers(redis_url):
    caps = parse_caps("twilio=2")
    one = ProviderLimiter(redis_url, {}, caps=caps, slot_wait_s=0.05)
    two = ProviderLimiter(redis_url, {}, caps=caps, slot_wait_s=0.05)
    url = "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json"
    with one.in_flight("twilio", "AC1", "POST", url), two.in_flight("twilio", "AC1", "POST", url):
        started = time.monotonic()
        try:
            with one.in_flight("twilio", "AC1", "POST", url):
                raise AssertionError("a third slot was granted")
        except Throttled as exc:
            assert exc.retry_in_s > 0
        assert time.monotonic() - started >= 0.05  # it waited for a slot first
        with two.in_flight("twilio", "AC2", "POST", url):  # another account: its own slots
            pass
    with one.in_flight("twilio", "AC1", "POST", url):  # both slots freed on the way out
        with one.in_flight("twilio", "AC1", "POST", url):
            pass


def test_requests_waiting_for_a_slot_are_sent_in_the_order_they_came(redis_url):
    """One process's requests waiting on a full cap stand in line: each freed slot goes to
    the one that has waited longest (with every waiter polling Redis, any of them could win)."""
    limiter = ProviderLimiter(redis_url, {}, caps=parse_caps("twilio=1"), slot_wait_s=10)
    url = "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json"
    served: list[int] = []
    holder = limiter.in_flight("twilio", "AC1", "POST", url)
    holder.__enter__()

    def request(index: int) -> None:
        with limiter.in_flight("twilio", "AC1", "POST", url):
            served.append(index)
            time.sleep(0.02)

    waiters = []
    for index in range(6):
        thread = threading.Thread(target=request, args=(index,))
        thread.start()
        waiters.append(thread)
        time.sleep(0.05)  # in line before the next one comes
    holder.__exit__(None, None, None)
    for thread in waiters:
        thread.join(timeout=10)
    assert served == list(range(6))


def test_a_freed_slot_goes_to_the_process_that_waited_longest(redis_url):
    """Cap 1, held by process A. Process B's request starts waiting, then another of A's.
    A frees its slot: B's request, which came first, is sent next, not A's own."""
    url = "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json"
    a, b = (
        ProviderLimiter(redis_url, {}, caps=parse_caps("twilio=1"), slot_wait_s=10)
        for _ in range(2)
    )
    served: list[str] = []

    def request(limiter: ProviderLimiter, name: str) -> None:
        with limiter.in_flight("twilio", "AC1", "POST", url):
            served.append(name)
            time.sleep(0.05)

    holder = a.in_flight("twilio", "AC1", "POST", url)
    holder.__enter__()
    waiting = [threading.Thread(target=request, args=(b, "b"))]
    waiting[0].start()
    time.sleep(0.1)
    waiting.append(threading.Thread(target=request, args=(a, "a")))
    waiting[1].start()
    time.sleep(0.1)
    holder.__exit__(None, None, None)
    for thread in waiting:
        thread.join(timeout=10)
    assert served == ["b", "a"]


def test_a_waiter_of_a_worker_that_died_stops_holding_its_place(redis_url):
    """A process that died while its request waited first for a slot stops asking; once it
    has been silent for SLOT_WAITER_SILENCE_MS it no longer comes before the live waiters."""
    from worker.runtime.budgets import SLOT_WAITER_SILENCE_MS, SLOTS_KEY

    url = "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json"
    live = ProviderLimiter(redis_url, {}, caps=parse_caps("twilio=1"), slot_wait_s=5)
    holder = live.in_flight("twilio", "AC1", "POST", url)
    holder.__enter__()
    key = SLOTS_KEY.format(cap="twilio@AC1")
    dead = ProviderLimiter(redis_url, {}, caps=parse_caps("twilio=1"))
    # Its one ask, with the cap full: it is now first in the order, and then it died.
    assert not dead._take_slot(
        keys=[key, f"{key}:heads", f"{key}:seen"], args=[30_000, 1, "dead", 500]
    )
    holder.__exit__(None, None, None)  # its release wakes the dead waiter: nobody hears
    started = time.monotonic()
    with live.in_flight("twilio", "AC1", "POST", url):
        waited = time.monotonic() - started
    assert waited < SLOT_WAITER_SILENCE_MS / 1000 + 0.5, waited


def test_a_process_that_comes_later_gets_its_share_of_a_full_cap(redis_url):
    """One worker keeps a cap of 2 full; a second comes 0.3 s later. From then on each freed
    slot goes to the process whose first waiter came first, so the second gets about half
    (a process whose releases woke only its own waiters kept nearly all of them)."""
    url = "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json"
    limiters = [
        ProviderLimiter(redis_url, {}, caps=parse_caps("twilio=2"), slot_wait_s=10)
        for _ in range(2)
    ]
    sent: list[list[float]] = [[], []]
    stop = time.monotonic() + 1.8

    def requests(side: int) -> None:
        while time.monotonic() < stop:
            with limiters[side].in_flight("twilio", "AC1", "POST", url):
                sent[side].append(time.monotonic())
                time.sleep(0.02)

    first = [threading.Thread(target=requests, args=(0,)) for _ in range(4)]
    for thread in first:
        thread.start()
    time.sleep(0.3)
    second_came = time.monotonic()
    later = [threading.Thread(target=requests, args=(1,)) for _ in range(4)]
    for thread in later:
        thread.start()
    for thread in first + later:
        thread.join(timeout=20)
    both = [sum(at > second_came + 0.1 for at in times) for times in sent]
    assert min(both) >= 0.35 * sum(both), both
    assert sum(both) >= 0.6 * (2 * 1.4 / 0.02), both  # and the cap was kept busy


def test_a_request_that_gives_up_waiting_leaves_the_line(redis_url):
    """Waiters that time out are Throttled and leave; the line is not left blocked by them."""
    limiter = ProviderLimiter(redis_url, {}, caps=parse_caps("twilio=1"), slot_wait_s=0.2)
    url = "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json"
    refused: list[Throttled] = []

    def request() -> None:
        try:
            with limiter.in_flight("twilio", "AC1", "POST", url):
                raise AssertionError("a second slot was granted")
        except Throttled as exc:
            refused.append(exc)

    with limiter.in_flight("twilio", "AC1", "POST", url):
        waiters = [threading.Thread(target=request) for _ in range(3)]
        for thread in waiters:
            thread.start()
        for thread in waiters:
            thread.join(timeout=5)
    assert len(refused) == 3
    started = time.monotonic()
    with limiter.in_flight("twilio", "AC1", "POST", url):  # free, and nobody left in line
        pass
    assert time.monotonic() - started < 0.2


def test_a_slot_of_a_worker_that_died_frees_itself_after_its_lease(redis_url):
    dead = ProviderLimiter(redis_url, {}, caps=parse_caps("twilio=1"), slot_lease_s=0.3)
    live = ProviderLimiter(
        redis_url, {}, caps=parse_caps("twilio=1"), slot_lease_s=0.3, slot_wait_s=2
    )
    dead._slot("twilio", "AC1", "GET", "/x")  # taken, never freed: the process died
    started = time.monotonic()
    with live.in_flight("twilio", "AC1", "GET", "/x"):
        waited = time.monotonic() - started
    assert 0.2 <= waited < 2


def run_batch(spawn, psettings, service, make_tenant, sandbox, db, count, **updates):
    settings = psettings.model_copy(update={"twilio_account_sid": ACCOUNT, **updates})
    tenant = make_tenant(credits_cents=100_000, assistants=count)
    items = [{"assistant_id": a, **PHONE} for a in tenant.assistant_ids]
    reply = BatchService(service).submit(
        tenant.account_id, json.dumps({"items": items}).encode(), path="/v0/contact/batch"
    )
    assert len(reply.body["info"]["accepted"]) == count
    spawn("worker", settings, "--concurrency", "12")
    wait_for(lambda: all_terminal(db, count), timeout=120)
    assert set(statuses(db).values()) == {"active"}
    return sandbox.stats()


def test_a_worker_under_the_cap_meets_no_20429(spawn, psettings, service, make_tenant, sandbox, db):
    """12 threads, the account's limit 4: with the cap at 4 no request is refused, and the
    limit is used to the full."""
    sandbox.set_faults(twilio_concurrency_limit=4, latency_ms=150)
    stats = run_batch(
        spawn, psettings, service, make_tenant, sandbox, db, 40, provider_concurrency="twilio=4"
    )
    account = stats["twilio_concurrency"][ACCOUNT]
    assert stats["faults"].get("concurrency_limited", 0) == 0, stats
    assert account["refused"] == 0
    assert account["peak"] == 4
    assert stats["calls"]["twilio.buy"] == 40


def test_without_the_cap_the_same_batch_meets_20429s(
    spawn, psettings, service, make_tenant, sandbox, db
):
    """The case above without the cap: the account's limit refuses requests (and the worker's
    retries still bring every contact to active). What the cap is for."""
    sandbox.set_faults(twilio_concurrency_limit=4, latency_ms=150)
    stats = run_batch(spawn, psettings, service, make_tenant, sandbox, db, 40)
    assert stats["twilio_concurrency"][ACCOUNT]["refused"] > 0, stats
