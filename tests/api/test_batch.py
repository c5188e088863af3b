"""The batch routes over real HTTP: each item judged alone, credits reserved per accepted item,
counts by status, account scoping, Idempotency-Key replay, the larger body limit."""

from __future__ import annotations

import json

import redis
from sqlalchemy import select
from test_contacts import EMAIL, PHONE, WHATSAPP, post
from test_errors import assert_error

from worker.store.models import Account, Contact, LedgerEntry

BATCH = "/v0/contact/batch"


def item(assistant, body):
    return {"assistant_id": assistant, **body}


def accepted_indexes(info):
    return [a["index"] for a in info["accepted"]]


def rejected_codes(info):
    return {r["index"]: r["error"]["code"] for r in info["rejected"]}


def test_mixed_batch_judges_each_item_alone_and_reserves_only_the_accepted(
    client, make_tenant, make_settings, db
):
    # 5.00 of credits, 1.00 taken by a contact made before: phone 1.00 + email 0.50 +
    # whatsapp 2.00 fit (0.50 left), the next whatsapp (2.00) does not, a later email does.
    tenant = make_tenant(credits_cents=500, assistants=6)
    other = make_tenant(name="other")
    a = tenant.assistant_ids
    existing = post(client, tenant, PHONE, assistant=a[5])
    assert existing.status_code == 202
    items = [
        item(a[0], PHONE),                                 # 0 accepted
        item(a[0], {"contact_type": "fax"}),               # 1 invalid body: 422
        item(other.assistant_ids[0], PHONE),               # 2 another account's: 404
        item(a[0], EMAIL),                                 # 3 accepted
        item(a[0], PHONE),                                 # 4 same type earlier in the batch: 409
        item(a[5], PHONE),                                 # 5 live contact already: 409
        item(a[1], WHATSAPP),                              # 6 accepted (3.50 of 3.50 left)
        item(a[2], WHATSAPP),                              # 7 over credit: 402
        {"contact_type": "phone"},                         # 8 no assistant_id: 422
        item(a[3], {**EMAIL, "email_local": "grace"}),     # 9 fits the 0.50 left
        item(999_999, {"contact_type": "fax"}),            # 10 unknown assistant outranks body
        "not an object",                                   # 11 422
        item(True, PHONE),                                 # 12 not an integer: 422
    ]
    response = client.post(BATCH, json={"items": items}, headers=tenant.headers)
    assert response.status_code == 202, response.text
    info = response.json()["info"]
    assert response.headers["location"] == f"{BATCH}/{info['batch_id']}"
    assert accepted_indexes(info) == [0, 3, 6, 9]
    assert rejected_codes(info) == {
        1: "invalid_request", 2: "not_found", 4: "contact_exists", 5: "contact_exists",
        7: "insufficient_credits", 8: "invalid_request",
        10: "not_found", 11: "invalid_request", 12: "invalid_request",
    }
    rejected = {r["index"]: r["error"] for r in info["rejected"]}
    assert rejected[1]["fields"] == {"contact_type": "must be one of phone, email, whatsapp"}
    assert set(rejected[8]["fields"]) == {"assistant_id"}
    assert set(rejected[12]["fields"]) == {"assistant_id"}
    assert all(r["error"]["message"] for r in info["rejected"])

    credits = client.get("/v0/credits", headers=tenant.headers).json()["info"]
    # 1.00 for the contact made before, 4.00 for the batch's four.
    assert credits == {"balance": "5.00", "reserved": "5.00", "available": "0.00"}
    ids = [a["contact_id"] for a in info["accepted"]]
    with db.read() as session:
        rows = session.execute(select(Contact).where(Contact.id.in_(ids))).scalars().all()
        ledger = session.execute(
            select(LedgerEntry.contact_id, LedgerEntry.kind, LedgerEntry.amount_cents)
            .where(LedgerEntry.contact_id.in_(ids))).all()
    assert {r.id: (r.contact_type, r.status, r.batch_id) for r in rows} == {
        ids[0]: ("phone", "pending", info["batch_id"]),
        ids[1]: ("email", "pending", info["batch_id"]),
        ids[2]: ("whatsapp", "pending", info["batch_id"]),
        ids[3]: ("email", "pending", info["batch_id"]),
    }
    assert sorted(ledger) == sorted([(ids[0], "reserve", 100), (ids[1], "reserve", 50),
                                     (ids[2], "reserve", 200), (ids[3], "reserve", 50)])
    contact = client.get(f"/v0/assistant/{a[1]}/contact/{ids[2]}", headers=tenant.headers)
    assert contact.json()["info"]["batch_id"] == info["batch_id"]
    assert contact.json()["info"]["request"]["user_whatsapp_number"] == "+442071838750"


def test_batch_contacts_are_published_to_the_bulk_queue(client, tenant, settings):
    items = [item(tenant.assistant_ids[0], PHONE), item(tenant.assistant_ids[0], EMAIL)]
    info = client.post(BATCH, json={"items": items}, headers=tenant.headers).json()["info"]
    from worker.embedded_redis import redis_url

    r = redis.Redis.from_url(redis_url(settings))
    bulk = [json.loads(m) for m in r.lrange("bulk", 0, -1)]
    assert sorted(m["headers"]["argsrepr"] for m in bulk) == sorted(
        repr([a["contact_id"]]) for a in info["accepted"])
    assert r.llen("interactive") == 0


def test_get_counts_by_status_and_done(client, make_tenant, db):
    tenant = make_tenant(assistants=3)
    items = [item(a, PHONE) for a in tenant.assistant_ids] + [item(999_999, PHONE)]
    info = client.post(BATCH, json={"items": items}, headers=tenant.headers).json()["info"]
    url = f"{BATCH}/{info['batch_id']}"
    got = client.get(url, headers=tenant.headers)
    assert got.status_code == 200
    assert got.json()["info"] == {
        "batch_id": info["batch_id"], "total": 3,
        "counts": {"pending": 3, "provisioning": 0, "active": 0, "grace_period": 0,
                   "deleting": 0, "failed": 0, "deleted": 0},
        "done": False,
    }
    ids = [a["contact_id"] for a in info["accepted"]]
    with db.write() as session:  # as the workers would leave them
        for contact_id, status in zip(ids, ["active", "failed", "provisioning"], strict=True):
            session.get(Contact, contact_id).status = status
    assert client.get(url, headers=tenant.headers).json()["info"]["done"] is False
    with db.write() as session:
        session.get(Contact, ids[2]).status = "active"
    final = client.get(url, headers=tenant.headers).json()["info"]
    assert final["counts"] == {"pending": 0, "provisioning": 0, "active": 2, "grace_period": 0,
                               "deleting": 0, "failed": 1, "deleted": 0}
    assert final["done"] is True
    # A contact being deleted (a cancellation) is still work in progress; deleted is done.
    with db.write() as session:
        session.get(Contact, ids[1]).status = "deleting"
    assert client.get(url, headers=tenant.headers).json()["info"]["done"] is False
    with db.write() as session:
        session.get(Contact, ids[1]).status = "deleted"
    assert client.get(url, headers=tenant.headers).json()["info"]["done"] is True


def test_batch_with_nothing_accepted_is_done_at_once(client, tenant):
    response = client.post(BATCH, json={"items": [item(999_999, PHONE)]}, headers=tenant.headers)
    info = response.json()["info"]
    assert response.status_code == 202 and info["accepted"] == []
    got = client.get(f"{BATCH}/{info['batch_id']}", headers=tenant.headers).json()["info"]
    assert got["total"] == 0 and got["done"] is True


def test_another_account_cannot_see_the_batch(client, make_tenant):
    owner, stranger = make_tenant(), make_tenant(name="stranger")
    info = client.post(BATCH, json={"items": [item(owner.assistant_ids[0], PHONE)]},
                       headers=owner.headers).json()["info"]
    assert_error(client.get(f"{BATCH}/{info['batch_id']}", headers=stranger.headers), 404,
                 "not_found")
    assert_error(client.get(f"{BATCH}/bt_nope", headers=owner.headers), 404, "not_found")
    assert_error(client.get(f"{BATCH}/{info['batch_id']}"), 401, "unauthenticated")
    assert_error(client.post(BATCH, json={"items": []}), 401, "unauthenticated")


def test_idempotent_replay_returns_the_same_batch_and_reserves_once(client, make_tenant):
    tenant = make_tenant(assistants=2)
    body = {"items": [item(a, PHONE) for a in tenant.assistant_ids]}
    headers = {**tenant.headers, "Idempotency-Key": "chunk-0"}
    first = client.post(BATCH, json=body, headers=headers)
    again = client.post(BATCH, json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert client.get("/v0/credits", headers=tenant.headers).json()["info"]["reserved"] == "2.00"
    other = {"items": [item(tenant.assistant_ids[0], EMAIL)]}
    assert_error(client.post(BATCH, json=other, headers=headers), 422, "idempotency_key_reused")
    # Without the key the same body is judged afresh: both phones exist now.
    fresh = client.post(BATCH, json=body, headers=tenant.headers).json()["info"]
    assert set(rejected_codes(fresh).values()) == {"contact_exists"}


def test_not_a_batch_is_422_naming_items(client, tenant, settings):
    for body, field in [({}, "items"), ({"items": "x"}, "items"), ({"items": []}, "items"),
                        ([1], "body")]:
        assert_error(client.post(BATCH, json=body, headers=tenant.headers), 422,
                     "invalid_request", [field])
    too_many = {"items": [item(1, PHONE)] * (settings.batch_max_items + 1)}
    assert_error(client.post(BATCH, json=too_many, headers=tenant.headers), 422,
                 "invalid_request", ["items"])
    assert_error(client.post(BATCH, content=b"{", headers=tenant.headers), 422,
                 "invalid_request", ["body"])


def test_a_full_batch_is_over_64_kib_and_accepted(client, make_tenant, settings):
    tenant = make_tenant(credits_cents=100_000, assistants=1000)
    items = [item(a, {**EMAIL, "email_local": f"user.{a}"}) for a in tenant.assistant_ids]
    raw = json.dumps({"items": items}).encode()
    assert len(raw) > settings.max_body_bytes
    response = client.post(BATCH, content=raw, headers=tenant.headers)
    assert response.status_code == 202, response.text
    assert len(response.json()["info"]["accepted"]) == 1000
    # The single route keeps its 64 KiB limit; the batch route has its own.
    assert_error(post(client, tenant, {"contact_type": "phone", "pad": "x" * 70_000}), 413,
                 "payload_too_large")
    huge = b'{"items": [' + b'"' + b"x" * settings.max_batch_body_bytes + b'"]}'
    assert_error(client.post(BATCH, content=huge, headers=tenant.headers), 413,
                 "payload_too_large")


def test_batch_contacts_are_listed_a_page_at_a_time(client, make_tenant):
    tenant = make_tenant(assistants=5)
    other = make_tenant(name="other")
    items = [item(a, PHONE) for a in tenant.assistant_ids]
    info = client.post(BATCH, json={"items": items}, headers=tenant.headers).json()["info"]
    url = f"{BATCH}/{info['batch_id']}/contacts"
    first = client.get(url, params={"limit": 3}, headers=tenant.headers)
    assert first.status_code == 200
    page = first.json()["info"]
    rest = client.get(url, params={"limit": 3, "starting_after": page[-1]["id"]},
                      headers=tenant.headers).json()["info"]
    listed = page + rest
    assert [c["id"] for c in listed] == sorted(a["contact_id"] for a in info["accepted"])
    assert {c["batch_id"] for c in listed} == {info["batch_id"]}
    assert {c["status"] for c in listed} == {"pending"}
    assert_error(client.get(url, headers=other.headers), 404, "not_found")
    assert_error(client.get(url, params={"limit": 0}, headers=tenant.headers), 422,
                 "invalid_request", ["limit"])
    assert_error(client.get(url, params={"starting_after": "x"}, headers=tenant.headers), 422,
                 "invalid_request", ["starting_after"])


def test_concurrent_batches_and_single_posts_never_over_reserve(api_url, make_tenant, db):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    # Credits for 30 phones; 4 batches of 20 (overlapping assistants) and 20 single posts.
    tenant = make_tenant(credits_cents=3000, assistants=60)
    a = tenant.assistant_ids
    batches = [{"items": [item(x, PHONE) for x in a[i * 10:i * 10 + 20]]} for i in range(4)]

    def send(job):
        with httpx.Client(base_url=api_url, timeout=60) as http:
            if isinstance(job, dict):
                info = http.post(BATCH, json=job, headers=tenant.headers).json()["info"]
                return len(info["accepted"])
            response = http.post(f"/v0/assistant/{job}/contact", json=PHONE,
                                 headers=tenant.headers)
            return 1 if response.status_code == 202 else 0

    with ThreadPoolExecutor(24) as pool:
        accepted = sum(pool.map(send, [*batches, *a[30:50]]))
    with db.read() as session:
        account = session.get(Account, tenant.account_id)
        rows = session.execute(select(Contact.assistant_id)).scalars().all()
    assert accepted == len(rows) == 30  # as many as the credits pay for, not one more
    assert len(set(rows)) == 30  # one live phone per assistant
    assert account.reserved_cents == account.balance_cents == 3000
