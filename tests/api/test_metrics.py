"""`GET /metrics` and `X-Request-ID` on the real API over HTTP, with the real Redis broker."""

from __future__ import annotations

import base64
import json

import redis

ROUTE = "/v0/assistant/{assistant_id}/contact/{contact_id}"


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value, 0 when the series is not there yet (counters start at zero)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_need_no_key_and_count_requests_by_route_template(client, tenant):
    before = client.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
    labels = {"route": ROUTE, "method": "GET", "status": "404"}
    start = value(before.text, "provisioner_http_requests_total", **labels)
    unmatched = value(before.text, "provisioner_http_requests_total", route="unmatched",
                      method="GET", status="404")
    assistant = tenant.assistant_ids[0]
    for contact_id in ("ct_01aaaaaaaaaaaaaaaaaaaaaaaa", "ct_01bbbbbbbbbbbbbbbbbbbbbbbb"):
        missing = client.get(f"/v0/assistant/{assistant}/contact/{contact_id}",
                             headers=tenant.headers)
        assert missing.status_code == 404
    assert client.get("/no/such/route").status_code == 404

    after = client.get("/metrics").text
    assert value(after, "provisioner_http_requests_total", **labels) == start + 2
    assert value(after, "provisioner_http_requests_total", route="unmatched", method="GET",
                 status="404") == unmatched + 1
    assert "ct_01aaaaaaaaaaaaaaaaaaaaaaaa" not in after  # ids never become label values


def test_a_refused_oversized_body_is_counted_under_its_route(client, tenant):
    route = "/v0/assistant/{assistant_id}/contact"
    labels = {"route": route, "method": "POST", "status": "413"}
    start = value(client.get("/metrics").text, "provisioner_http_requests_total", **labels)
    big = client.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
                      content=b"{" + b" " * 70_000 + b"}", headers=tenant.headers)
    assert big.status_code == 413
    after = client.get("/metrics").text
    assert value(after, "provisioner_http_requests_total", **labels) == start + 1


def test_queue_depth_is_read_from_redis_per_queue(client, tenant):
    # The test's API has no worker: the tasks of two accepted contacts wait in `interactive`.
    assistant = tenant.assistant_ids[0]
    for body in ({"contact_type": "phone"},
                 {"contact_type": "email", "email_local": "queue.depth", "first_name": "A",
                  "last_name": "B"}):
        posted = client.post(f"/v0/assistant/{assistant}/contact", json=body,
                             headers=tenant.headers)
        assert posted.status_code == 202, posted.text
    text = client.get("/metrics").text
    assert value(text, "provisioner_queue_depth", queue="interactive") == 2
    assert 'provisioner_queue_depth{queue="bulk"} 0.0' in text


def test_request_id_is_returned_and_travels_in_the_task_message(client, tenant, settings):
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers[
        "x-request-id"] == "abc-123"
    # Not a plain token (it would land in every log line): replaced.
    replaced = client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 200})
    assert replaced.headers["x-request-id"] != "a b\tc" + "x" * 200

    posted = client.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
                         json={"contact_type": "phone"},
                         headers={**tenant.headers, "X-Request-ID": "req-42"})
    assert posted.status_code == 202 and posted.headers["x-request-id"] == "req-42"
    (raw,) = redis.Redis.from_url(settings.redis_url).lrange("interactive", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["request_id"] == "req-42"
    args = json.loads(base64.b64decode(message["body"]))[0]
    assert args == [posted.json()["info"]["id"]]
