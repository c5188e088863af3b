"""The gauges the alerts are written on, read by the real API's `/metrics` from the real
database and Redis: each reports what the rows say, and each is read by an index, not a scan."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text, update
from support.pipeline import wait_for
from support.services import serve_in_thread
from support.webhooks import add_event

from api_stub.app import create_app
from worker.metrics import record_beat_tick
from worker.store import liveness
from worker.store import webhooks as webhook_store
from worker.store.models import Contact, WebhookDelivery

PHONE = {"contact_type": "phone"}


def sample(text_: str, name: str, **labels: str) -> float | None:
    """One sample's value, None when the series is absent."""
    for line in text_.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return float(value)
    return None


def post(client, tenant, assistant: int, body: dict) -> str:
    answer = client.post(f"/v0/assistant/{assistant}/contact", json=body, headers=tenant.headers)
    assert answer.status_code == 202, answer.text
    return answer.json()["info"]["id"]


def test_oldest_pending_age_is_the_longest_waiting_pending_contact(client, make_tenant, db):
    assert sample(client.get("/metrics").text,
                  "provisioner_oldest_pending_contact_age_seconds") == 0.0
    tenant = make_tenant(assistants=3)
    old, newer, started = (post(client, tenant, a, PHONE) for a in tenant.assistant_ids)
    now = datetime.now(UTC)
    with db.write() as session:
        session.execute(update(Contact).where(Contact.id == old)
                        .values(updated_at=now - timedelta(seconds=300)))
        session.execute(update(Contact).where(Contact.id == newer)
                        .values(updated_at=now - timedelta(seconds=100)))
        # Older still, but a runner has it: not waiting for one.
        session.execute(update(Contact).where(Contact.id == started)
                        .values(status="provisioning", updated_at=now - timedelta(seconds=900)))
    age = sample(client.get("/metrics").text, "provisioner_oldest_pending_contact_age_seconds")
    assert 300 <= age < 330

    with db.write() as session:
        session.execute(update(Contact).where(Contact.id == old).values(status="provisioning"))
    age = sample(client.get("/metrics").text, "provisioner_oldest_pending_contact_age_seconds")
    assert 100 <= age < 130


def test_webhook_backlog_counts_due_undelivered_deliveries_only(client, tenant, db):
    assert sample(client.get("/metrics").text, "provisioner_webhook_backlog") == 0.0
    now = datetime.now(UTC)
    events = [add_event(db, tenant.account_id) for _ in range(5)]
    with db.write() as session:
        for event_id in events:
            webhook_store.ensure_delivery(session, event_id, now)
    due_at = {  # two due (one of them a retry whose time came), one later, two finished
        events[0]: ("pending", now - timedelta(seconds=5)),
        events[1]: ("pending", now - timedelta(hours=2)),
        events[2]: ("pending", now + timedelta(minutes=30)),
        events[3]: ("succeeded", now - timedelta(seconds=5)),
        events[4]: ("failed", now - timedelta(seconds=5)),
    }
    with db.write() as session:
        for event_id, (status, at) in due_at.items():
            session.execute(update(WebhookDelivery).where(WebhookDelivery.event_id == event_id)
                            .values(status=status, next_attempt_at=at))
    assert sample(client.get("/metrics").text, "provisioner_webhook_backlog") == 2.0


def test_live_workers_counts_heartbeats_younger_than_dead_after(client, db, settings):
    assert sample(client.get("/metrics").text, "provisioner_workers_live") == 0.0
    now = datetime.now(UTC)
    with db.write() as session:
        liveness.beat(session, "host-a:1", now)
        liveness.beat(session, "host-b:2", now - timedelta(seconds=settings.worker_dead_after_s / 2))
        liveness.beat(session, "host-c:3", now - timedelta(seconds=settings.worker_dead_after_s + 5))
    assert sample(client.get("/metrics").text, "provisioner_workers_live") == 2.0
    with db.write() as session:
        liveness.forget(session, "host-a:1")
    assert sample(client.get("/metrics").text, "provisioner_workers_live") == 1.0


def test_a_running_beat_reports_its_ticks(client, settings, spawn):
    assert sample(client.get("/metrics").text,
                  "provisioner_beat_last_tick_timestamp_seconds") is None
    spawn("beat", settings)
    first = wait_for(lambda: sample(client.get("/metrics").text,
                                    "provisioner_beat_last_tick_timestamp_seconds"), timeout=60)
    assert abs(first - time.time()) < 30
    # It keeps ticking (the reconciler is due every few seconds): the timestamp moves on.
    wait_for(lambda: sample(client.get("/metrics").text,
                            "provisioner_beat_last_tick_timestamp_seconds") > first, timeout=60)


def test_beat_tick_is_read_from_redis(client, settings):
    import redis

    record_beat_tick(redis.Redis.from_url(settings.redis_url), 1_800_000_000.5)
    assert sample(client.get("/metrics").text,
                  "provisioner_beat_last_tick_timestamp_seconds") == 1_800_000_000.5


def test_request_latency_histogram_is_by_route_template_and_status_class(client, tenant):
    route = "/v0/assistant/{assistant_id}/contact/{contact_id}"
    labels = {"route": route, "method": "GET", "status_class": "4xx"}
    before = sample(client.get("/metrics").text,
                    "provisioner_http_request_duration_seconds_count", **labels) or 0.0
    for contact_id in ("ct_01aaaaaaaaaaaaaaaaaaaaaaaa", "ct_01bbbbbbbbbbbbbbbbbbbbbbbb"):
        assert client.get(f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{contact_id}",
                          headers=tenant.headers).status_code == 404
    post(client, tenant, tenant.assistant_ids[0], PHONE)
    metrics = client.get("/metrics").text
    assert sample(metrics, "provisioner_http_request_duration_seconds_count", **labels) == (
        before + 2)
    assert sample(metrics, "provisioner_http_request_duration_seconds_bucket",
                  **labels, le="+Inf") == before + 2
    assert sample(metrics, "provisioner_http_request_duration_seconds_count",
                  route="/v0/assistant/{assistant_id}/contact", method="POST",
                  status_class="2xx") >= 1
    assert "ct_01aaaaaaaaaaaaaaaaaaaaaaaa" not in metrics
    assert 'status_class="404"' not in metrics


def test_provider_credentials_gauge_follows_the_readiness_check(make_settings, sandbox, db):
    settings = make_settings(sandbox_url=sandbox.url, twilio_auth_token="",
                             google_access_token="sandbox-token")
    with serve_in_thread(create_app(settings, db=db)) as api, httpx.Client(base_url=api) as http:
        def gauge(provider: str) -> float | None:
            http.get("/readyz")  # the check runs in the background of a read
            return sample(http.get("/metrics").text, "provisioner_provider_credentials_ok",
                          provider=provider)

        wait_for(lambda: gauge("twilio") == 0.0, timeout=10)
        assert gauge("google") == 1.0


# --- each figure is read by an index: the plans on a table of many rows ---------------------

ROWS = 20_000


def _fill(db, tenant) -> None:
    """ROWS finished contacts and delivered webhooks beside the few that count."""
    with db.write() as session:
        series = ("generate_series(1, :n) AS s(i)" if session.get_bind().dialect.name ==
                  "postgresql" else
                  "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)"
                  " SELECT i FROM s) AS s")
        values = {"a": tenant.account_id, "b": tenant.assistant_ids[0], "n": ROWS}
        session.execute(text(
            "INSERT INTO contacts (id, account_id, assistant_id, contact_type, status, request,"
            " setup_cost_cents, monthly_cost_cents, charged, reservation_seq, deliveries,"
            " takeovers, created_at, updated_at)"
            " SELECT 'ct_bulk' || s.i, :a, :b, 'phone', 'failed', '{}', 0, 0, false, 1, 0, 0,"
            f" CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM {series}"), values)
        session.execute(text(
            "INSERT INTO events (id, account_id, contact_id, type, payload, created_at)"
            " SELECT 'evt_bulk' || s.i, :a, 'ct_bulk' || s.i, 'contact.failed', '{}',"
            f" CURRENT_TIMESTAMP FROM {series}"), values)
        session.execute(text(
            "INSERT INTO webhook_deliveries (id, event_id, account_id, contact_id, type, status,"
            " attempts, next_attempt_at, created_at, updated_at)"
            " SELECT 'whd_bulk' || s.i, 'evt_bulk' || s.i, :a, 'ct_bulk' || s.i,"
            " 'contact.failed', 'succeeded', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP,"
            f" CURRENT_TIMESTAMP FROM {series}"), values)
    with db.peek() as connection:
        connection.exec_driver_sql("ANALYZE")


def _plan(db, statement) -> str:
    from worker.store.db import Database

    assert isinstance(db, Database)
    with db.read() as session:
        dialect = session.get_bind().dialect
        sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        prefix = "EXPLAIN" if dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
        return "\n".join(str(row[-1]) for row in session.execute(text(f"{prefix} {sql}")))


def test_each_figure_is_read_through_an_index_on_many_rows(db, tenant):
    from worker.app.gauges import WEBHOOK_BACKLOG_CAP
    from worker.store.gauges import oldest_pending_query, webhook_backlog_query

    _fill(db, tenant)
    plan = _plan(db, oldest_pending_query())
    assert "ix_contacts_pending_since" in plan, plan
    assert "Seq Scan" not in plan and "SCAN contacts" not in plan, plan

    now = datetime.now(UTC).replace(microsecond=0)
    plan = _plan(db, webhook_backlog_query(now, WEBHOOK_BACKLOG_CAP))
    assert "ix_webhook_deliveries_due" in plan, plan
    assert "Seq Scan" not in plan and "SCAN webhook_deliveries" not in plan, plan
