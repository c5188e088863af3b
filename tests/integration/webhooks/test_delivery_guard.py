"""One delivery at a time, in-process, against the sandbox's sink over HTTP: the address rule
at delivery time, DNS rebinding, redirects, 410, and secret rotation."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from support.webhooks import REFUSED_URLS, add_event, deliveries, set_endpoint_unchecked

from worker.app.webhooks import WebhookService
from worker.domain.webhooks import RefusedTarget
from worker.runtime.delivery import Deliverer, WebhookSender
from worker.store import webhooks as store


def deliverer(db, settings, resolve=None) -> Deliverer:
    sender = WebhookSender(settings, resolve) if resolve else WebhookSender(settings)
    return Deliverer(db, settings, sender)


def attempts(service: WebhookService, account_id: int) -> list[dict]:
    return [a for d in service.deliveries(account_id, None) for a in d["attempts"]]


@pytest.mark.parametrize("url", sorted(REFUSED_URLS))
def test_each_unsafe_url_is_refused_at_delivery(make_settings, db, tenant, url):
    # Stored without the set-time check (as if the rule changed after it was set).
    strict = make_settings(webhook_allow_private=False)
    set_endpoint_unchecked(db, tenant.account_id, url)
    deliverer(db, strict).deliver(add_event(db, tenant.account_id), "test")
    [attempt] = attempts(WebhookService(db, strict), tenant.account_id)
    assert attempt["outcome"] == "refused_address" and attempt["status_code"] is None


def test_a_loopback_receiver_is_not_called_unless_allowed(make_settings, db, tenant, sandbox):
    set_endpoint_unchecked(db, tenant.account_id, sandbox.sink_url("inside"))
    event_id = add_event(db, tenant.account_id)
    deliverer(db, make_settings(webhook_allow_private=False)).deliver(event_id, "test")
    assert sandbox.sink("inside") == []
    [delivery] = deliveries(db)
    assert delivery.status == "pending"  # retried on the schedule, refused each time


def test_name_resolving_to_private_at_delivery_is_refused_although_public_when_set(
    make_settings, db, tenant, sandbox
):
    answers = iter([[ipaddress.ip_address("93.184.216.34")], [ipaddress.ip_address("127.0.0.1")]])

    def rebinding(host, port):
        return next(answers)

    strict = make_settings(webhook_allow_private=False)
    port = sandbox.url.rsplit(":", 1)[1]
    url = f"http://hooks.example.com:{port}/_sandbox/sink/rebind"
    WebhookService(db, strict, resolve=rebinding).set(tenant.account_id, {"url": url})
    deliverer(db, strict, rebinding).deliver(add_event(db, tenant.account_id), "test")
    assert sandbox.sink("rebind") == []
    assert attempts(WebhookService(db, strict), tenant.account_id)[0]["outcome"] == (
        "refused_address"
    )


def test_connects_to_the_checked_address_with_the_name_in_host(settings, db, tenant, sandbox):
    checked = []

    def resolve(host, port):
        checked.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    port = sandbox.url.rsplit(":", 1)[1]
    url = f"http://hooks.example.com:{port}/_sandbox/sink/named"
    set_endpoint_unchecked(db, tenant.account_id, url)
    deliverer(db, settings, resolve).deliver(add_event(db, tenant.account_id), "test")
    [received] = sandbox.sink("named")
    assert received["headers"]["host"] == f"hooks.example.com:{port}"
    assert checked == ["hooks.example.com"]  # resolved once, by us, and checked


def test_every_resolved_address_is_checked(make_settings, db):
    service = WebhookService(
        db, make_settings(webhook_allow_private=False),
        resolve=lambda host, port: [ipaddress.ip_address("93.184.216.34"),
                                    ipaddress.ip_address("10.0.0.8")],
    )
    with pytest.raises(RefusedTarget, match="private"):
        service.check_url("https://mixed.example.com/")


def test_a_redirect_is_a_failure_and_is_not_followed(settings, db, tenant, sandbox):
    sandbox.set_sink_status("moved", 307)
    set_endpoint_unchecked(db, tenant.account_id, sandbox.sink_url("moved"))
    deliverer(db, settings).deliver(add_event(db, tenant.account_id), "test")
    assert len(sandbox.sink("moved")) == 1
    [attempt] = attempts(WebhookService(db, settings), tenant.account_id)
    assert (attempt["outcome"], attempt["status_code"]) == ("http_error", 307)
    assert deliveries(db)[0].status == "pending"


def test_410_disables_the_endpoint(settings, db, tenant, sandbox):
    sandbox.set_sink_status("gone", 410)
    service = WebhookService(db, settings)
    service.set(tenant.account_id, {"url": sandbox.sink_url("gone")})
    send = deliverer(db, settings)
    send.deliver(add_event(db, tenant.account_id), "test")
    assert deliveries(db)[0].status == "failed"
    assert service.get(tenant.account_id)["enabled"] is False
    send.deliver(add_event(db, tenant.account_id), "test")
    assert deliveries(db)[1].status == "no_endpoint"
    assert len(sandbox.sink("gone")) == 1
    service.set(tenant.account_id, {"url": sandbox.sink_url("gone")})  # setting it re-enables
    assert service.get(tenant.account_id)["enabled"] is True


def test_rotation_signs_with_both_secrets_during_the_grace(settings, db, tenant, sandbox):
    service = WebhookService(db, settings)
    old = service.set(tenant.account_id, {"url": sandbox.sink_url("rot")})["secret"]
    new = service.rotate(tenant.account_id)["secret"]
    deliverer(db, settings).deliver(add_event(db, tenant.account_id), "test")
    [received] = sandbox.sink("rot")
    assert len(received["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(received["body"], received["headers"])


def test_after_the_grace_only_the_new_secret_signs(make_settings, db, tenant, sandbox):
    settings = make_settings(webhook_secret_grace_s=1)
    service = WebhookService(db, settings)
    old = service.set(tenant.account_id, {"url": sandbox.sink_url("after")})["secret"]
    new = service.rotate(tenant.account_id)["secret"]
    time.sleep(1.1)
    deliverer(db, settings).deliver(add_event(db, tenant.account_id), "test")
    [received] = sandbox.sink("after")
    assert Webhook(new).verify(received["body"], received["headers"])
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(received["body"], received["headers"])


def test_a_held_delivery_is_not_sent_side_by_side(settings, db, tenant, sandbox):
    set_endpoint_unchecked(db, tenant.account_id, sandbox.sink_url("once"))
    event_id = add_event(db, tenant.account_id)
    send = deliverer(db, settings)
    with db.write() as session:  # another sender holds it
        store.ensure_delivery(session, event_id, datetime.now(UTC))
        assert store.claim(session, event_id, "other", datetime.now(UTC), 60, (1,)) is not None
    assert send.deliver(event_id, "test") is None
    assert sandbox.sink("once") == []


def test_a_slow_receiver_is_a_timeout_and_a_closed_port_a_connection_error(
    make_settings, db, make_tenant, sandbox
):
    settings = make_settings(webhook_timeout_s=0.5)
    slow, closed = make_tenant(name="slow"), make_tenant(name="closed")
    sandbox.set_sink_status("slow", 200, delay_ms=2000)
    set_endpoint_unchecked(db, slow.account_id, sandbox.sink_url("slow"))
    set_endpoint_unchecked(db, closed.account_id, "http://127.0.0.1:9/hooks")
    send = deliverer(db, settings)
    assert send.deliver(add_event(db, slow.account_id), "test") == 5  # retried in 5 s
    assert send.deliver(add_event(db, closed.account_id), "test") == 5
    service = WebhookService(db, settings)
    [timeout] = attempts(service, slow.account_id)
    [refused] = attempts(service, closed.account_id)
    assert timeout["outcome"] == "timeout" and timeout["status_code"] is None
    assert refused["outcome"] == "connection_error" and refused["error"]


def test_only_the_first_kib_of_a_huge_answer_is_read(settings, db, tenant):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sent = []

    class Huge(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-length", str(64 * 1024 * 1024))
            self.end_headers()
            try:
                for _ in range(1024):  # 64 MiB, unless the client stops reading
                    self.wfile.write(b"x" * 65536)
                    sent.append(1)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Huge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        set_endpoint_unchecked(db, tenant.account_id, f"http://127.0.0.1:{server.server_port}/")
        deliverer(db, settings).deliver(add_event(db, tenant.account_id), "test")
    finally:
        server.shutdown()
    [attempt] = attempts(WebhookService(db, settings), tenant.account_id)
    assert attempt["outcome"] == "succeeded"
    assert attempt["response"] == "x" * 1024
    assert len(sent) < 1024  # the connection was closed long before the end
