"""Traces, request metrics and log correlation, the same in every service.

Traces follow OpenTelemetry and W3C trace context: an HTTP request continues the
caller's `traceparent` (FastAPI's own instrumentation), an event written in that
request keeps it (the ledger's `events.trace_context`, an outbox row's `traceparent`
header), the relays put it on the Kafka message as a `traceparent` header, and a
consumer continues it around its handler, so one trace runs from a checkout's earn to
the email it causes. Spans are exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
(or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; either way every log line written
inside a span carries its `trace_id` and `span_id`, and the `correlation_id` bound for
the request or message.

`RequestTelemetry`, one lean ASGI middleware, does both per request: the server span
and the request metrics (`http_requests_total`, `http_request_duration_seconds` per
route template, method and status class). It replaces FastAPI's own OpenTelemetry and
prometheus-fastapi-instrumentator, which together cost the ledger about 0.6 ms of CPU
per earn (measured; ADR 0011). Without an exporter, spans are not recorded (sampler
off): they still carry trace and span ids, for the logs and the events, at little cost.
`metrics_response` serves the registry, gathering all worker processes' values when
`PROMETHEUS_MULTIPROC_DIR` is set (the ledger with `LEDGER_WORKERS` > 1).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Response
from fastapi.telemetry import TelemetryConfig
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACEPARENT = "traceparent"
# What an event keeps is the trace context alone (not baggage, the global propagator's
# other half), so it is injected by this propagator directly.
_TRACE_CONTEXT = TraceContextTextMapPropagator()
# FastAPI's own OpenTelemetry stays off: RequestTelemetry does the spans and metrics.
TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
_configured = False

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template, method and status class",
    ["handler", "method", "status"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method",
    ["handler", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
_UNTRACKED = frozenset({"/healthz", "/readyz", "/metrics"})


def setup_tracing(service: str) -> None:
    """The process's tracer provider, named after the service; once per process. Spans
    are recorded and exported over OTLP when an endpoint is configured, else only their
    ids exist."""
    global _configured
    if _configured:
        return
    exporting = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(ALWAYS_ON) if exporting else ALWAYS_OFF,
    )
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


@functools.cache
def _request_metrics(route: str, method: str, status_class: int) -> tuple[Any, Any]:
    """The labelled request counter and latency histogram (``labels`` validates and
    looks its arguments up on every call; the set of routes is small)."""
    return (
        REQUESTS.labels(route, method, f"{status_class}xx"),
        LATENCY.labels(route, method),
    )


class RequestTelemetry:
    """Per HTTP request: a server span continuing the caller's `traceparent`, named by
    the route template once routing found it, and the request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tracer = trace.get_tracer("loyalty.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACKED:
            await self.app(scope, receive, send)
            return
        traceparent = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name == b"traceparent"),
            None,
        )
        parent = propagate.extract({TRACEPARENT: traceparent}) if traceparent else None
        method = scope["method"]
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None) or "none"
                if span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                requests, latency = _request_metrics(route, method, status // 100)
                requests.inc()
                latency.observe(time.perf_counter() - started)


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace and span ids."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event.setdefault("trace_id", format(span.trace_id, "032x"))
        event.setdefault("span_id", format(span.span_id, "016x"))
    return event


def instrument(app: FastAPI) -> None:
    """Spans and request metrics for every route but the probes and /metrics."""
    app.add_middleware(RequestTelemetry)


def metrics_response() -> Response:
    """The Prometheus exposition of this process, or of all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent`, to keep with what it wrote."""
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def continued(
    name: str,
    traceparent: str | None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """A span continuing the trace of ``traceparent`` (a new trace if None)."""
    parent = propagate.extract({TRACEPARENT: traceparent} if traceparent else {})
    token = otel_context.attach(parent)
    try:
        tracer = trace.get_tracer("loyalty")
        with tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes or {})):
            yield
    finally:
        otel_context.detach(token)


def bind_correlation(correlation_id: str | None) -> None:
    """Log lines from here on (in this task) carry the correlation id."""
    if correlation_id:
        structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
    else:
        structlog.contextvars.unbind_contextvars("correlation_id")
