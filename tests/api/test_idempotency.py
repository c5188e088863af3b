"""Idempotency-Key: replay, reuse with another body, in flight, refusals free the key, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from test_contacts import EMAIL, PHONE, post
from test_errors import assert_error

from worker.domain.idempotency import fingerprint
from worker.store import idempotency as store
from worker.store.models import IdempotencyRecord


def keyed(tenant, key):
    return {**tenant.headers, "Idempotency-Key": key}


def test_replay_returns_the_first_response_marked_replayed(client, tenant):
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"
    first = client.post(path, json=PHONE, headers=keyed(tenant, "k1"))
    again = client.post(path, json=PHONE, headers=keyed(tenant, "k1"))
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert "idempotent-replayed" not in first.headers
    assert client.get("/v0/credits", headers=tenant.headers).json()["info"]["reserved"] == "1.00"


def test_key_reused_with_another_body_or_route_is_422(client, make_tenant):
    tenant = make_tenant(assistants=2)
    assert post(client, tenant, PHONE, headers=keyed(tenant, "k2")).status_code == 202
    assert_error(post(client, tenant, EMAIL, headers=keyed(tenant, "k2")), 422,
                 "idempotency_key_reused")
    other_route = post(client, tenant, PHONE, assistant=tenant.assistant_ids[1],
                       headers=keyed(tenant, "k2"))
    assert_error(other_route, 422, "idempotency_key_reused")


def test_key_is_scoped_to_the_account(client, make_tenant):
    one, two = make_tenant(), make_tenant(name="two")
    assert post(client, one, PHONE, headers=keyed(one, "shared")).status_code == 202
    second = post(client, two, PHONE, headers=keyed(two, "shared"))
    assert second.status_code == 202
    assert "idempotent-replayed" not in second.headers


def test_first_request_still_in_flight_is_409(client, tenant, db):
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"
    body = b'{"contact_type": "phone"}'
    with db.write() as session:  # a first request that has claimed the key and not finished
        store.claim(session, tenant.account_id, "busy", fingerprint("POST", path, body),
                    datetime.now(UTC), timedelta(hours=24), timedelta(seconds=60))
    response = client.post(path, content=body, headers=keyed(tenant, "busy"))
    assert_error(response, 409, "idempotency_key_in_flight")


def test_abandoned_in_flight_key_is_taken_over_after_the_lock_timeout(client, tenant, db):
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"
    body = b'{"contact_type": "phone"}'
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    with db.write() as session:
        store.claim(session, tenant.account_id, "crashed", fingerprint("POST", path, body),
                    long_ago, timedelta(hours=24), timedelta(seconds=60))
    response = client.post(path, content=body, headers=keyed(tenant, "crashed"))
    assert response.status_code == 202


def test_refused_request_frees_its_key_for_a_corrected_retry(client, make_tenant, db):
    poor = make_tenant(credits_cents=0)
    assert_error(post(client, poor, PHONE, headers=keyed(poor, "k3")), 402,
                 "insufficient_credits")
    assert_error(post(client, poor, {"contact_type": "fax"}, headers=keyed(poor, "k4")), 422,
                 "invalid_request")
    # Same key, same body, after a top-up: processed afresh, not replayed as 402.
    from worker.store import credits

    with db.write() as session:
        credits.top_up(session, poor.account_id, 500, "topup:later")
    retried = post(client, poor, PHONE, headers=keyed(poor, "k3"))
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers


def test_records_expire_after_24_hours(client, tenant, db):
    path = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"
    first = client.post(path, json=PHONE, headers=keyed(tenant, "old"))
    assert first.status_code == 202
    with db.write() as session:
        session.execute(update(IdempotencyRecord).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    # Expired: the key is new again, so this request is judged afresh (409: phone exists).
    assert_error(client.post(path, json=PHONE, headers=keyed(tenant, "old")), 409,
                 "contact_exists")


def test_purge_removes_only_expired_records(client, tenant, db):
    assert post(client, tenant, PHONE, headers=keyed(tenant, "p1")).status_code == 202
    with db.write() as session:
        assert store.purge_expired(session, datetime.now(UTC)) == 0
    with db.write() as session:
        assert store.purge_expired(session, datetime.now(UTC) + timedelta(hours=24, seconds=1)) == 1


def test_idempotency_key_too_long_is_422(client, tenant):
    assert_error(post(client, tenant, PHONE, headers=keyed(tenant, "k" * 256)), 422,
                 "invalid_request", ["Idempotency-Key"])
