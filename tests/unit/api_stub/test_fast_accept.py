"""How the POST's fast path groups requests (api_stub/accept.py): the queueing logic alone,
over a stand-in service whose commit the test holds and lets go. The real service, database
and Redis under it are tested in tests/api (test_concurrency, test_rate_limit_groups)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from api_stub.accept import FastAccept
from api_stub.ratelimit import RateLimited
from worker.app.contacts import Acceptance


class Service:
    """Accepts everything, once the test opens `gate`; records each batch's contact ids."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.gate = threading.Event()
        self.batches: list[list[str]] = []
        self.refuse = refuse

    def accept_prepared(self, batch):
        self.gate.wait(10)
        self.batches.append([p.contact.id for p in batch])
        return [
            Acceptance.NO_CREDITS if p.contact.id in self.refuse else Acceptance.ACCEPTED
            for p in batch
        ]

    def settle(self, prepared, outcome):
        raise LookupError(f"{prepared.contact.id} refused: {outcome}")


class Limiter:
    def __init__(self, allowed: dict[str, int] | None = None) -> None:
        self.allowed = allowed or {}
        self.calls: list[tuple[str, int]] = []

    def check_many(self, key, count):
        self.calls.append((key, count))
        room = self.allowed.get(key, count)
        return [None] * min(room, count) + [7] * max(0, count - room)


def prepared(contact_id: str, account_id: int = 1):
    return SimpleNamespace(
        contact=SimpleNamespace(id=contact_id, account_id=account_id),
        reply=SimpleNamespace(status=202, body={"info": {"id": contact_id}}),
    )


async def _wait_for(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


def test_requests_arriving_together_are_taken_together_by_a_free_slot():
    service = Service()
    service.gate.set()
    fast = FastAccept(service, Limiter())

    async def main():
        return await asyncio.gather(*(fast.submit("key", prepared(c)) for c in "abc"))

    asyncio.run(main())
    assert service.batches == [["a", "b", "c"]]


def test_an_idle_accounts_request_goes_at_once_alone():
    service = Service()
    service.gate.set()
    fast = FastAccept(service, Limiter())

    async def main():
        return await fast.submit("key", prepared("a"))

    reply = asyncio.run(main())
    assert reply.body == {"info": {"id": "a"}}
    assert service.batches == [["a"]]


def test_requests_arriving_while_both_slots_are_busy_go_together_next():
    service = Service()
    fast = FastAccept(service, Limiter(), in_flight=2)

    async def main():
        first = []
        for c in ("a", "b"):  # each slot taken by a batch of one
            first.append(asyncio.create_task(fast.submit("key", prepared(c))))
            await asyncio.sleep(0.05)
        rest = [asyncio.create_task(fast.submit("key", prepared(f"r{i}"))) for i in range(10)]
        await asyncio.sleep(0.05)
        service.gate.set()
        return await asyncio.gather(*first, *rest)

    replies = asyncio.run(main())
    assert [r.body["info"]["id"] for r in replies] == ["a", "b"] + [f"r{i}" for i in range(10)]
    # The two slots' threads wake together, so only the batches are certain, not their order.
    assert sorted(service.batches) == [["a"], ["b"], [f"r{i}" for i in range(10)]]


def test_a_batch_takes_at_most_max_batch_requests():
    service = Service()
    fast = FastAccept(service, Limiter(), in_flight=1, max_batch=4)

    async def main():
        head = asyncio.create_task(fast.submit("key", prepared("head")))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(fast.submit("key", prepared(f"r{i}"))) for i in range(10)]
        await asyncio.sleep(0.05)
        service.gate.set()
        await asyncio.gather(head, *rest)

    asyncio.run(main())
    assert [len(b) for b in service.batches] == [1, 4, 4, 2]


def test_accounts_are_batched_apart():
    service = Service()
    fast = FastAccept(service, Limiter(), in_flight=1)

    async def main():
        heads = [asyncio.create_task(fast.submit("k", prepared(f"h{a}", a))) for a in (1, 2)]
        await asyncio.sleep(0.05)
        rest = [
            asyncio.create_task(fast.submit("k", prepared(f"{a}-{i}", a)))
            for i in range(3)
            for a in (1, 2)
        ]
        await asyncio.sleep(0.05)
        service.gate.set()
        await asyncio.gather(*heads, *rest)

    asyncio.run(main())
    assert sorted(service.batches) == [["1-0", "1-1", "1-2"], ["2-0", "2-1", "2-2"], ["h1"], ["h2"]]


def test_rate_limited_requests_are_refused_and_never_reach_the_acceptance():
    service = Service()
    limiter = Limiter({"tight": 2})
    fast = FastAccept(service, limiter, in_flight=1)

    async def main():
        head = asyncio.create_task(fast.submit("other", prepared("head")))
        await asyncio.sleep(0.05)
        tight = [asyncio.create_task(fast.submit("tight", prepared(f"t{i}"))) for i in range(4)]
        loose = asyncio.create_task(fast.submit("other", prepared("loose")))
        await asyncio.sleep(0.05)
        service.gate.set()
        return await asyncio.gather(head, *tight, loose, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [getattr(o, "body", None) for o in outcomes[:3]] == [
        {"info": {"id": "head"}}, {"info": {"id": "t0"}}, {"info": {"id": "t1"}}
    ]
    assert all(isinstance(o, RateLimited) and o.retry_after == 7 for o in outcomes[3:5])
    assert outcomes[5].body == {"info": {"id": "loose"}}
    assert service.batches == [["head"], ["t0", "t1", "loose"]]
    assert sorted(limiter.calls) == [("other", 1), ("other", 1), ("tight", 4)]


def test_a_refusal_is_answered_by_the_service_and_the_rest_of_its_batch_is_accepted():
    service = Service(refuse=frozenset({"poor"}))
    fast = FastAccept(service, Limiter(), in_flight=1)

    async def main():
        head = asyncio.create_task(fast.submit("k", prepared("head")))
        await asyncio.sleep(0.05)
        poor = asyncio.create_task(fast.submit("k", prepared("poor")))
        rich = asyncio.create_task(fast.submit("k", prepared("rich")))
        await asyncio.sleep(0.05)
        service.gate.set()
        return await asyncio.gather(head, poor, rich, return_exceptions=True)

    head, poor, rich = asyncio.run(main())
    assert isinstance(poor, LookupError) and "no_credits" in str(poor)
    assert rich.body == {"info": {"id": "rich"}}


def test_a_waiter_whose_client_left_does_not_break_its_batch():
    service = Service()
    fast = FastAccept(service, Limiter(), in_flight=1)

    async def main():
        head = asyncio.create_task(fast.submit("k", prepared("head")))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(fast.submit("k", prepared("gone")))
        kept = asyncio.create_task(fast.submit("k", prepared("kept")))
        await asyncio.sleep(0.05)
        gone.cancel()
        service.gate.set()
        return await asyncio.gather(head, kept)

    head, kept = asyncio.run(main())
    assert kept.body == {"info": {"id": "kept"}}
    assert service.batches == [["head"], ["gone", "kept"]]  # accepted all the same
    with pytest.raises(KeyError):
        fast._accounts[1]  # nothing left behind for the account
