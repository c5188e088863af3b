"""OpenTelemetry tracing: one trace from an API request through the worker's task to the
provider calls and the webhook delivery. Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

The maintained instrumentations make the spans (FastAPI's server spans, Celery's task spans,
httpx's client spans to the providers and the webhook receivers, SQLAlchemy's statements;
the worker's hot statements that run on psycopg's cursor directly, worker/store/driver.py,
have none);
`CeleryPublisher` publishes without Celery's publish signals, so it opens a producer span and
carries the W3C `traceparent` in the message headers itself (`inject`), where the Celery
instrumentation's task span finds it. The SDK's own environment variables are not read: the
`OTEL_*` values come from `Settings` like every other setting, and are passed in.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

from worker.settings import Settings

log = structlog.get_logger(__name__)
_state: dict[str, Any] = {"enabled": False, "tracer": None, "instrumentors": []}


def enabled() -> bool:
    return bool(_state["enabled"])


def configure(settings: Settings, component: str, *, exporter: Any = None) -> bool:
    """Install the tracer provider and the instrumentations in this process, if tracing is
    on: `OTEL_EXPORTER_OTLP_ENDPOINT` set (spans go to `<endpoint>/v1/traces` over OTLP/HTTP),
    or an `exporter` given (tests: the SDK's InMemorySpanExporter, exported synchronously).
    `component` names the service (`provisioner-api`, ...) unless OTEL_SERVICE_NAME does."""
    if _state["enabled"]:
        return True
    endpoint = settings.otel_exporter_otlp_endpoint
    if exporter is None and not endpoint:
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    name = settings.otel_service_name or f"provisioner-{component}"
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}),
        sampler=ParentBased(TraceIdRatioBased(settings.otel_traces_sampler_arg)),
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=endpoint.rstrip("/") + "/v1/traces",
            headers=otlp_headers(settings.otel_exporter_otlp_headers.get_secret_value()),
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrumentors = [CeleryInstrumentor(), HTTPXClientInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    _state.update(
        enabled=True,
        tracer=provider.get_tracer("worker.tracing"),
        instrumentors=instrumentors,
        provider=provider,
        engines=[],
    )
    log.info("tracing_on", service=name, endpoint=endpoint or None)
    return True


def instrument_engine(engine: Any) -> None:
    """SQLAlchemy's statement spans for `engine` (worker.store.db calls it for each engine it
    makes). This is what the SQLAlchemy instrumentation's `instrument(engine=...)` does; its
    process-wide `instrument()` would only reach engines made by a `create_engine` looked up
    after it ran (worker.store.db imported it long before), and it declares `sqlalchemy < 2.1`
    while its engine events are those 2.1 keeps (the one-trace test checks the spans)."""
    if not _state["enabled"]:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    usage = get_meter(__name__).create_up_down_counter("db.client.connections.usage")
    tracer = _state["provider"].get_tracer("opentelemetry.instrumentation.sqlalchemy")
    _state["engines"].append(EngineTracer(tracer, engine, usage))


def shutdown() -> None:
    """Flush, remove the instrumentations and turn tracing off (tests; a process's exit)."""
    if not _state["enabled"]:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    EngineTracer.remove_all_event_listeners()
    for instrumentor in _state["instrumentors"]:
        instrumentor.uninstrument()
    _state["provider"].force_flush()
    _state.update(enabled=False, tracer=None, instrumentors=[], engines=[])


def instrument_app(app: Any) -> None:
    """FastAPI's server spans for `app` (a span per request, named by route template)."""
    if _state["enabled"]:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=_state["provider"],
            excluded_urls="healthz,readyz,metrics",
            exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
        )


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (`traceparent`, `tracestate`), to publish
    later from another context (the API's grouped acceptance); None when tracing is off."""
    if not _state["enabled"]:
        return None
    from opentelemetry.propagate import inject

    headers: dict[str, str] = {}
    inject(headers)
    return headers or None


@contextmanager
def producing(
    task: str, argument: str, headers: MutableMapping[str, Any], parent: dict[str, str] | None
) -> Iterator[None]:
    """Around the publish of one task message: a producer span (child of `parent`, a
    `carrier()`, else of the current context) whose `traceparent` goes into `headers`;
    `argument` is the task's (a contact or event id)."""
    if not _state["enabled"]:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject

    context = extract(parent) if parent else None
    tracer = _state["tracer"]
    with tracer.start_as_current_span(
        f"publish/{task}", context=context, kind=trace.SpanKind.PRODUCER
    ) as span:
        span.set_attribute("messaging.system", "celery")
        span.set_attribute("messaging.destination.name", task)
        span.set_attribute("provisioner.task_argument", argument)
        inject(headers)
        yield


def otlp_headers(raw: str) -> dict[str, str]:
    """`OTEL_EXPORTER_OTLP_HEADERS`' `key=value,key2=value2` (values URL-encoded)."""
    from urllib.parse import unquote

    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {unquote(k.strip()): unquote(v.strip()) for k, v in pairs}
