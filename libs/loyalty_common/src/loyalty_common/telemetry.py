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

Request metrics (`http_requests_total`, `http_request_duration_seconds` per route,
method and status class) come from prometheus-fastapi-instrumentator; `metrics_response`
serves the registry, gathering all worker processes' values when
`PROMETHEUS_MULTIPROC_DIR` is set (the ledger with `LEDGER_WORKERS` > 1).
"""

from __future__ import annotations

import os
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
from opentelemetry.trace import SpanKind
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_fastapi_instrumentator import Instrumentator

TRACEPARENT = "traceparent"
# FastAPI's own OpenTelemetry: a server span per request, continuing the caller's
# traceparent; its metrics and logs are Prometheus' and structlog's business here.
TELEMETRY: TelemetryConfig = {
    "tracing": True,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}
_configured = False


def setup_tracing(service: str) -> None:
    """The process's tracer provider, named after the service; once per process."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


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
    """Request metrics for every route except the probes and /metrics."""
    Instrumentator(excluded_handlers=["/healthz", "/readyz", "/metrics"]).instrument(app)


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
    propagate.inject(carrier)
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
