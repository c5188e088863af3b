"""Concurrent requests: credits never go below zero and one Idempotency-Key makes one contact."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select
from test_contacts import PHONE

from worker.store.models import Account, Contact


def test_50_concurrent_posts_with_credits_for_10_accept_exactly_10(api_url, make_tenant, db):
    tenant = make_tenant(credits_cents=1000, assistants=50)  # 10 phone contacts at 1.00

    def submit(assistant_id: int) -> int:
        with httpx.Client(base_url=api_url, timeout=60) as http:
            return http.post(f"/v0/assistant/{assistant_id}/contact", json=PHONE,
                             headers=tenant.headers).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(submit, tenant.assistant_ids))
    assert statuses.count(202) == 10
    assert statuses.count(402) == 40
    with db.read() as session:
        account = session.get(Account, tenant.account_id)
        assert account.balance_cents == 1000
        assert account.reserved_cents == 1000
        assert account.balance_cents - account.reserved_cents == 0
        count = session.execute(select(func.count()).select_from(Contact)).scalar_one()
    assert count == 10


def test_20_concurrent_posts_with_one_idempotency_key_create_one_contact(api_url, tenant, db):
    headers = {**tenant.headers, "Idempotency-Key": "onboard-42"}
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=api_url, timeout=60) as http:
            return http.post(path, json=PHONE, headers=headers)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(submit, range(20)))
    accepted = [r for r in responses if r.status_code == 202]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(accepted) + len(in_flight) == 20
    assert accepted, [r.text for r in responses]
    assert all(r.json()["error"]["code"] == "idempotency_key_in_flight" for r in in_flight)
    assert len({r.json()["info"]["id"] for r in accepted}) == 1
    with db.read() as session:
        assert session.execute(select(func.count()).select_from(Contact)).scalar_one() == 1
        assert session.get(Account, tenant.account_id).reserved_cents == 100


def _post_all(api_url, paths, headers, body=PHONE):
    """POST to every path at once, from a key the API has seen (its plain POSTs are accepted
    together, in groups, from the event loop)."""
    with httpx.Client(base_url=api_url) as http:
        assert http.get("/v0/credits", headers=headers).status_code == 200

    def submit(path: str) -> httpx.Response:
        with httpx.Client(base_url=api_url, timeout=60) as http:
            return http.post(path, json=body, headers=headers)

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(submit, paths))


def test_concurrent_posts_for_one_assistant_make_one_contact_and_409_the_rest(
    api_url, tenant, db
):
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"
    responses = _post_all(api_url, [path] * 20, tenant.headers)
    assert [r.status_code for r in responses].count(202) == 1, [r.text for r in responses]
    refused = [r for r in responses if r.status_code != 202]
    assert {r.json()["error"]["code"] for r in refused} == {"contact_exists"}
    with db.read() as session:
        assert session.execute(select(func.count()).select_from(Contact)).scalar_one() == 1
        assert session.get(Account, tenant.account_id).reserved_cents == 100


def test_concurrent_posts_mixing_good_unknown_and_foreign_assistants_answer_each_alone(
    api_url, make_tenant, db
):
    tenant = make_tenant(assistants=10)
    other = make_tenant(name="other", assistants=5)
    paths = [f"/v0/assistant/{a}/contact" for a in tenant.assistant_ids]
    foreign = [f"/v0/assistant/{a}/contact" for a in other.assistant_ids]
    unknown = [f"/v0/assistant/{a}/contact" for a in range(10**9, 10**9 + 5)]
    responses = _post_all(api_url, paths + foreign + unknown, tenant.headers)
    statuses = [r.status_code for r in responses]
    assert statuses == [202] * 10 + [404] * 10, [r.text for r in responses]
    ids = {r.json()["info"]["id"] for r in responses[:10]}
    assert len(ids) == 10
    with db.read() as session:
        rows = session.execute(select(Contact.id, Contact.account_id)).all()
        assert {row.id for row in rows} == ids
        assert {row.account_id for row in rows} == {tenant.account_id}
        assert session.get(Account, tenant.account_id).reserved_cents == 1000
        assert session.get(Account, other.account_id).reserved_cents == 0
