"""The rate limit of requests counted together (the POST's fast path counts a group of one
key's requests in one go): exactly as many pass as would have one by one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select
from support.services import serve_in_thread
from test_contacts import PHONE

from api_stub.ratelimit import RateLimiter
from worker.store.models import Account, Contact, LedgerEntry


def test_a_group_that_fits_passes_whole_and_counts_every_request(redis_url):
    limiter = RateLimiter(redis_url, "5/minute")
    assert limiter.check_many("k", 3) == [None, None, None]
    assert limiter.check_many("k", 2) == [None, None]
    refused = limiter.check("k")
    assert refused is not None and 1 <= refused <= 60


def test_a_group_larger_than_what_is_left_lets_the_first_ones_through(redis_url):
    limiter = RateLimiter(redis_url, "5/minute")
    assert limiter.check_many("k", 2) == [None, None]
    outcome = limiter.check_many("k", 6)
    assert outcome[:3] == [None, None, None]
    assert all(r is not None and 1 <= r <= 60 for r in outcome[3:])
    assert len(outcome) == 6
    assert limiter.check_many("other", 5) == [None] * 5  # keys are counted apart


@pytest.mark.parametrize("spec, passed", [("3/second;5/minute", 3), ("10/second;4/minute", 4)])
def test_with_several_limits_the_tightest_decides(redis_url, spec, passed):
    outcome = RateLimiter(redis_url, spec).check_many("k", 8)
    assert outcome[:passed] == [None] * passed
    assert all(r is not None for r in outcome[passed:])


def test_redis_down_fails_open_for_the_whole_group():
    limiter = RateLimiter("redis://127.0.0.1:1/0", "1/minute")
    assert limiter.check_many("k", 4) == [None] * 4


def test_concurrent_posts_over_the_rate_limit_accept_exactly_the_limit(make_settings, db,
                                                                        make_tenant):
    from api_stub.app import create_app

    tenant = make_tenant(assistants=30)
    app = create_app(make_settings(rate_limit="10/minute"), db=db)
    with serve_in_thread(app) as url:
        with httpx.Client(base_url=url) as http:  # the key is known to the process after it
            assert http.get("/v0/credits", headers=tenant.headers).status_code == 200

        def submit(assistant_id: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=60) as http:
                return http.post(f"/v0/assistant/{assistant_id}/contact", json=PHONE,
                                 headers=tenant.headers)

        with ThreadPoolExecutor(30) as pool:
            responses = list(pool.map(submit, tenant.assistant_ids))
    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == 9, statuses  # 10 a minute, the GET was one
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) == 21
    assert all(r.json()["error"]["code"] == "rate_limited" for r in limited)
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in limited)
    with db.read() as session:
        assert session.execute(select(func.count()).select_from(Contact)).scalar_one() == 9
        assert session.execute(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "reserve")
        ).scalar_one() == 9
        assert session.get(Account, tenant.account_id).reserved_cents == 900
