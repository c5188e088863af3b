"""One trace per contact: the API's request, the provisioning task, its provider calls and
the webhook delivery share one trace id (OpenTelemetry's in-memory exporter, the API and a
Celery worker in this process, real Redis, the database and the sandbox over HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from celery.contrib.testing.worker import start_worker
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support.pipeline import FAST, wait_for
from support.services import serve_in_thread

from worker import tracing
from worker.settings import Settings

CONTACT_ROUTE = "/v0/assistant/{assistant_id}/contact"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(Settings(), "test", exporter=exporter)
    yield exporter
    tracing.shutdown()  # the instrumentations off again for the rest of the suite


@pytest.fixture
def stack(spans, make_settings, sandbox, db) -> Iterator[tuple[Settings, str]]:
    """The API over loopback HTTP and a Celery worker (threads pool) in this process."""
    from api_stub.app import create_app
    from worker.runtime.celery_app import create_celery
    from worker.runtime.tasks import Runtime, register

    settings = make_settings(sandbox_url=sandbox.url, **FAST)
    app = create_celery(settings)
    runtime = Runtime(settings)
    register(app, runtime)
    with (
        serve_in_thread(create_app(settings, db=db)) as api,
        start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                     loglevel="WARNING", shutdown_timeout=30),
    ):
        yield settings, api
    runtime.close()


def named(spans, trace_id: int) -> list:
    return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]


def test_a_contacts_spans_share_one_trace_from_the_post_to_the_webhook(stack, spans,
                                                                        make_tenant, sandbox):
    settings, api = stack
    tenant = make_tenant(assistants=9)
    with httpx.Client(base_url=api, headers=tenant.headers, timeout=30) as http:
        assert http.put("/v0/webhook", json={"url": sandbox.sink_url("traced")}).status_code == 200

        def post(assistant: int) -> str:
            posted = http.post(f"/v0/assistant/{assistant}/contact",
                               json={"contact_type": "phone", "phone_country": "US"})
            assert posted.status_code == 202, posted.text
            return posted.json()["info"]["id"]

        # The first POST of a key takes the ordinary path; the others, the key now known, the
        # fast path (api_stub/accept.py), which accepts and publishes concurrent requests of
        # one account together: each contact must still be in its own request's trace.
        first = post(tenant.assistant_ids[0])
        with ThreadPoolExecutor(8) as pool:
            ids = [first, *pool.map(post, tenant.assistant_ids[1:])]
        for contact_id, assistant in zip(ids, tenant.assistant_ids, strict=True):
            wait_for(lambda c=contact_id, a=assistant: http.get(
                f"/v0/assistant/{a}/contact/{c}").json()["info"]["status"] == "active",
                timeout=60)
    wait_for(lambda: len(sandbox.sink("traced")) == len(ids), timeout=60)

    def posts() -> list:
        return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER
                and s.attributes.get("http.route") == CONTACT_ROUTE
                and s.attributes.get("http.method", s.attributes.get("http.request.method"))
                == "POST"]

    def trace_complete(post) -> bool:
        trace = named(spans, post.context.trace_id)
        names = [s.name for s in trace]
        urls = [url(s) for s in trace if s.kind is SpanKind.CLIENT]
        return (
            "run/worker.tasks.provision_contact" in names
            and "run/worker.tasks.deliver_webhook" in names
            and any("IncomingPhoneNumbers" in u for u in urls)  # the purchase
            and any("/_sandbox/sink/traced" in u for u in urls)  # the webhook delivery
        )

    # The delivery's spans end just after the sink has the body: wait for them.
    wait_for(lambda: len(posts()) == len(ids) and all(map(trace_complete, posts())), timeout=30)
    assert len({post.context.trace_id for post in posts()}) == len(ids)
    # The number search is in the trace of the contact that made it (the number pool's first
    # taker searched inline); the pool's candidates served the others without one.
    searched = [post for post in posts() if any(
        "AvailablePhoneNumbers" in url(s)
        for s in named(spans, post.context.trace_id) if s.kind is SpanKind.CLIENT)]
    assert 1 <= len(searched) < len(ids)
    traced_contacts = []
    for post in posts():
        trace = named(spans, post.context.trace_id)
        by_id = {s.context.span_id: s for s in trace}

        def ancestors(span, by_id=by_id) -> list:
            chain = []
            while span.parent is not None:
                span = by_id[span.parent.span_id]  # a parent outside the trace: KeyError
                chain.append(span)
            return chain

        task = only(trace, "run/worker.tasks.provision_contact")
        publish = by_id[task.parent.span_id]  # our publisher's producer span, in the API
        assert (publish.kind, publish.name) == (SpanKind.PRODUCER,
                                                "publish/worker.tasks.provision_contact")
        assert post in ancestors(task)
        traced_contacts.append(publish.attributes["provisioner.task_argument"])
        # The provider calls are the task's; the delivery task follows from it, and the POST
        # to the receiver is the delivery's.
        provider_calls = [s for s in trace if s.kind is SpanKind.CLIENT and "Phone" in url(s)]
        assert provider_calls and all(task in ancestors(s) for s in provider_calls)
        delivery = only(trace, "run/worker.tasks.deliver_webhook")
        assert task in ancestors(delivery)
        sent = [s for s in trace if s.kind is SpanKind.CLIENT and "/_sandbox/sink/" in url(s)]
        assert len(sent) == 1 and delivery in ancestors(sent[0])
        # SQL is traced too: the acceptance under the POST, the worker's under its task.
        for parent in (post, task):
            assert any(s.attributes.get("db.statement") and parent in ancestors(s)
                       for s in trace), f"no SQL span under {parent.name}"
    # Each request's trace holds its own contact, none twice.
    assert sorted(traced_contacts) == sorted(ids)


def url(span) -> str:
    return str(span.attributes.get("url.full", span.attributes.get("http.url", "")))


def only(trace: list, name: str):
    found = [s for s in trace if s.name == name]
    assert len(found) == 1, (name, [s.name for s in trace])
    return found[0]


def test_tracing_is_off_without_an_endpoint():
    assert tracing.configure(Settings(), "test") is False
    assert not tracing.enabled()
    assert tracing.carrier() is None
