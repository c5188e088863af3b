"""Redis Sentinel: the master SIGKILLed while contacts are posted through the API and run by a
real worker, the sentinels promote the replica, and every contact still ends active, charged
once, with one event. Prints the gaps the failover left (see docs/recovery.md)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import select
from support.invariants import check_invariants
from support.pipeline import FAST, all_terminal, statuses, wait_for
from support.sentinel import MASTER_NAME, SentinelCluster
from support.services import serve_in_thread

from worker.store.models import Contact, Event

CONTACTS = 60  # one phone contact per assistant
BEFORE_KILL = 20  # posted before the master is killed


@pytest.fixture
def cluster(tmp_path):
    cluster = SentinelCluster(tmp_path / "redis")
    yield cluster
    cluster.close()


def test_master_killed_mid_run_fails_over_and_every_contact_ends_active_once(
    cluster, spawn, make_settings, sandbox, db, make_tenant
):
    settings = make_settings(
        sandbox_url=sandbox.url,
        **FAST,
        redis_url="redis://mymaster/0",  # the host is the sentinels' to give
        redis_sentinels=cluster.sentinels,
        redis_sentinel_master=MASTER_NAME,
        # The provider budgets on the same Redis, through the sentinels too.
        provider_rate_limits="twilio=1000/second",
    )
    sandbox.set_faults(latency_ms=40)
    tenant = make_tenant(credits_cents=100_000, assistants=CONTACTS)
    spawn("worker", settings, "--concurrency", "8")
    spawn("beat", settings)  # the reconciler: what the old master lost, the database still has

    from api_stub.app import create_app

    answers: list[tuple[float, float, int, str | None]] = []  # sent, answered, status, id
    killed = threading.Event()

    def post_all(url: str) -> None:
        with httpx.Client(base_url=url, headers=tenant.headers, timeout=30) as http:
            for i, assistant in enumerate(tenant.assistant_ids):
                if i == BEFORE_KILL:
                    killed.wait(30)
                sent = time.monotonic()
                reply = http.post(f"/v0/assistant/{assistant}/contact",
                                  json={"contact_type": "phone", "phone_country": "US"})
                cid = reply.json()["info"]["id"] if reply.status_code == 202 else None
                answers.append((sent, time.monotonic(), reply.status_code, cid))
                time.sleep(0.05)

    with serve_in_thread(create_app(settings, db=db)) as url:
        poster = threading.Thread(target=post_all, args=(url,))
        poster.start()
        # Kill the master while contacts are mid-run: some active, some not yet.
        wait_for(lambda: sum(s == "active" for s in statuses(db).values()) >= 5, timeout=60,
                 every=0.02)
        old_master = cluster.master_address()
        cluster.kill_master()
        kill = time.monotonic()
        killed.set()
        assert not all_terminal(db, CONTACTS)
        new_master = wait_for(lambda: (a := cluster.master_address()) != old_master and a,
                              timeout=30, every=0.05)
        failed_over = time.monotonic()
        poster.join(120)
        assert not poster.is_alive()
        wait_for(lambda: all_terminal(db, CONTACTS), timeout=90, every=0.05)
    assert new_master == ("127.0.0.1", cluster.replica_port)

    # Every POST was accepted, during the failover too (a lost publish is the reconciler's).
    assert Counter(status for _, _, status, _ in answers) == {202: CONTACTS}
    assert check_invariants(db, sandbox) == {"active": CONTACTS}
    with db.read() as session:
        events = Counter(session.execute(select(Event.contact_id, Event.type)).all())
        done = dict(session.execute(select(Contact.id, Contact.updated_at)).all())
    assert {cid: events[(cid, "contact.active")] for cid in done} == dict.fromkeys(done, 1)
    assert {t for (_, t) in events} == {"contact.active"}

    after = [(sent, answered, cid) for sent, answered, _, cid in answers if sent >= kill]
    # Some contacts were posted while no master was up: their publish failed, and the
    # reconciler (beat) enqueued them on the new master.
    assert any(answered < failed_over for _, answered, _ in after)
    first_accepted = min(answered for _, answered, _ in after) - kill
    slowest = max(answered - sent for sent, answered, _ in after)

    def since_kill(at) -> float:  # the database's wall clock against the kill on ours
        return at.timestamp() - (time.time() - (time.monotonic() - kill))

    first_active = min(since_kill(done[cid]) for _, _, cid in after)
    last_terminal = since_kill(max(done.values()))
    print(
        f"\nsentinel failover: kill -> new master {failed_over - kill:.2f} s; "
        f"-> first contact accepted {first_accepted:.2f} s (slowest POST after the kill "
        f"{slowest:.2f} s); -> first contact posted after the kill active {first_active:.2f} s; "
        f"-> last contact terminal {last_terminal:.2f} s"
    )
    # Bounded by the sentinels' down-after (1 s) and election, the worker's reconnect
    # backoff (kombu: 2 s, then 4 s) and the reconciler (grace 1 s, every 0.5 s here).
    assert last_terminal < 30


def test_status_wake_ups_follow_the_master_through_a_failover(cluster):
    """A long poll's wake-up (worker.live publishes, api_stub.live subscribes) reaches the
    API again once the sentinels have promoted the replica."""
    from api_stub.live import Waiters
    from worker.live import Notifier
    from worker.redis_conn import RedisTarget

    target = RedisTarget("redis://mymaster/0",
                         tuple(("127.0.0.1", p) for p in cluster.sentinel_ports), MASTER_NAME)
    notifier = Notifier(target)
    waiters = Waiters(target)

    async def woken_within(seconds: float) -> bool:
        with waiters.watch(("contact", "ct_a")) as woken:
            await waiters.ready(5)
            deadline = asyncio.get_running_loop().time() + seconds
            while not woken.is_set() and asyncio.get_running_loop().time() < deadline:
                await asyncio.to_thread(notifier.changed, "ct_a", None, 1, "active")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), 0.2)
            return woken.is_set()

    async def scenario() -> tuple[bool, float, bool]:
        before = await woken_within(5)
        cluster.kill_master()
        kill = time.monotonic()
        after = await woken_within(30)
        return before, time.monotonic() - kill, after

    before, took, after = asyncio.run(scenario())
    notifier.close()
    assert before and after
    print(f"\nsentinel failover: kill -> wake-ups delivered again {took:.2f} s")
