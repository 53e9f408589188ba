"""OpenTelemetry tracing: one trace per hook, client spans for every dependency, no patient data.

What an exported span may carry is decided here, once, for every exporter (OTLP, console, tests):

* **No identifiers.** Server spans keep the route shape of their path (:class:`RedactHttpSpans`);
  client spans (httpx to FHIR / DICOMweb / JWKS) keep the URL's origin and the shape of its path,
  never the ids in it nor the query (:func:`redact_url`); exception events keep the exception's type
  and frames, never its message, and a status description is the exception's type only
  (:class:`Scrubbed`), the policy of :mod:`cds_service.logs` (OpenTelemetry semantic conventions,
  "Exceptions": ``exception.message`` is optional when ``exception.type`` is set).
* **Status from the outcome.** A span that names its ``hipcad.outcome`` gets status ERROR for a
  failure outcome (:data:`FAILED_OUTCOMES`) and OK otherwise (OpenTelemetry trace API, "Set Status":
  OK is the instrumented code's verdict of success).
* **Client spans** come from the OpenTelemetry instrumentations for httpx, gRPC (Triton) and
  SQLAlchemy (:func:`instrument_clients`). A client call outside any trace (the background dependency
  checks behind ``/readyz``) starts none (:class:`DropRootClientSpans`); probes are not traced
  (:func:`is_probe`, the web app's ``telemetry.exclude``).
* **Resource:** ``service.name`` from ``OTEL_SERVICE_NAME`` (else ``hipcad-cds-service``),
  ``OTEL_RESOURCE_ATTRIBUTES`` honoured, ``service.instance.id`` the pod's name (``POD_NAME``, else
  ``HOSTNAME``, which Kubernetes sets to the pod's name) so a span leads to its replica.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from cds_service import __version__

TRACER_NAME = "cds_service"
DEFAULT_SERVICE_NAME = "hipcad-cds-service"

#: Kubernetes probes and the Prometheus scrape: frequent, uninteresting, never traced.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/startupz", "/metrics"})

#: ``hipcad.outcome`` values that mean the work failed (span status ERROR); any other is a success
#: (OK): "not-relevant", "no-study", "in-progress", "started", "analysed", "BadRequestError" (the
#: client's fault, answered 400: not this service's failure).
FAILED_OUTCOMES = frozenset(
    {
        "internal-error",
        "InferenceError",
        "StudyUnavailableError",
        "UnusableImageError",
        "PrefetchUnavailableError",
        "uid-mismatch",
        "store-not-allowed",
    }
)

#: Path segments a client URL keeps as they are: the words of FHIR REST and DICOMweb (PS3.18 § 10)
#: URLs. A segment after a resource type or a DICOMweb level is an id; so is any segment with a digit.
_ID_FOLLOWS = re.compile(r"^([A-Z][A-Za-z]+|studies|series|instances|frames|bulkdata)$")
_PLAIN_SEGMENT = re.compile(r"^\.?[A-Za-z][A-Za-z_.-]*$")
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)', re.M)
_URL_ATTRIBUTES = ("url.full", "http.url")


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path-shape``: ids in the path become ``{id}``, query and fragment go.

    ``https://pacs/dicom-web/studies/1.2.3/series/4.5`` → ``https://pacs/dicom-web/studies/{id}/series/{id}``;
    ``https://ehr/fhir/Endpoint/abc`` → ``https://ehr/fhir/Endpoint/{id}``. User info is dropped.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable>"
    segments, previous = [], ""
    for segment in parts.path.split("/")[1:]:
        if _ID_FOLLOWS.match(previous) or not _PLAIN_SEGMENT.match(segment):
            segments.append("{id}" if segment else "")
        else:
            segments.append(segment)
        previous = segment
    path = "/" + "/".join(segments) if segments else ""
    return f"{parts.scheme}://{host}{port}{path}"


def is_probe(scope: MutableMapping[str, Any]) -> bool:
    """True for an ASGI request to a probe or ``/metrics``: the web app traces none of them."""
    return scope.get("type") == "http" and scope.get("path") in PROBE_PATHS


def service_resource() -> Resource:
    """The resource of every span: service name, version and instance (the pod), plus the environment's.

    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win over the defaults (OpenTelemetry SDK
    environment variables specification).
    """
    instance = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
    defaults: dict[str, Any] = {
        "service.name": DEFAULT_SERVICE_NAME,
        "service.version": __version__,
        "service.instance.id": instance,
    }
    from_environment = OTELResourceDetector().detect().attributes
    return Resource.create({**defaults, **from_environment})


class RedactHttpSpans(SpanProcessor):
    """FastAPI's own server spans record ``url.path`` and ``url.query``: viewer tokens travel in the
    path and a hostile client can put anything in either. Paths keep their route shape only
    (:func:`cds_service.logs.redact_path`), queries are dropped, client spans' full URLs are reduced
    by :func:`redact_url`, before any exporter sees the span."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        from cds_service.logs import redact_path

        attributes = span.attributes or {}
        if "url.path" in attributes:
            span.set_attribute("url.path", redact_path(str(attributes["url.path"])))
        if "url.query" in attributes:
            span.set_attribute("url.query", "")
        if "http.target" in attributes:
            span.set_attribute("http.target", redact_path(str(attributes["http.target"]).split("?", 1)[0]))
        for name in _URL_ATTRIBUTES:
            if name in attributes:
                span.set_attribute(name, redact_url(str(attributes[name])))


def scrub_event(event: Event) -> Event:
    """An exception event without ``exception.message``, its stack trace reduced to ``file:line function``
    frames (no source lines, no message); other events unchanged."""
    if event.name != "exception":
        return event
    attributes = dict(event.attributes or {})
    attributes.pop("exception.message", None)
    stacktrace = attributes.get("exception.stacktrace")
    if stacktrace is not None:
        frames = [f"{file}:{line} {name}" for file, line, name in _FRAME.findall(str(stacktrace))]
        attributes["exception.stacktrace"] = "\n".join(frames)
    return Event(event.name, attributes, event.timestamp)


def scrubbed_status(span: ReadableSpan) -> Status:
    """The span's status without a description that could quote data; derived from ``hipcad.outcome``
    when the code set none."""
    outcome = (span.attributes or {}).get("hipcad.outcome")
    status = span.status
    if status.status_code is StatusCode.ERROR:
        exception_types = [
            str(event.attributes.get("exception.type"))
            for event in span.events
            if event.name == "exception" and event.attributes
        ]
        description = str(outcome) if outcome else (exception_types[-1] if exception_types else None)
        return Status(StatusCode.ERROR, description)
    if outcome is not None and status.status_code is StatusCode.UNSET:
        if str(outcome) in FAILED_OUTCOMES:
            return Status(StatusCode.ERROR, str(outcome))
        return Status(StatusCode.OK)
    return Status(status.status_code)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` an exporter may see: :func:`scrub_event` and :func:`scrubbed_status` applied."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=[scrub_event(event) for event in span.events],
        links=span.links,
        kind=span.kind,
        status=scrubbed_status(span),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class Scrubbed(SpanProcessor):
    """Wraps a processor (and so its exporter): it only ever sees :func:`scrubbed` spans."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(scrubbed(span))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class DropRootClientSpans(Sampler):
    """Samples every root span except a client call made outside any trace (housekeeping: the
    dependency checks, the outbox replay), which would otherwise be one trace per call."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, links)

    def get_description(self) -> str:
        return "DropRootClientSpans"


def instrument_clients(provider: TracerProvider) -> None:
    """Client spans for httpx (FHIR, DICOMweb, JWKS), gRPC asyncio (Triton) and SQLAlchemy (the store),
    from the OpenTelemetry Python contrib instrumentations. Idempotent (each instruments once)."""
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    for instrumentor in (HTTPXClientInstrumentor(), GrpcAioInstrumentorClient(), SQLAlchemyInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    # The SQLAlchemy instrumentation wraps ``sqlalchemy.create_engine``; the store's module imported the
    # name before this ran (``from sqlalchemy import create_engine``), so it is pointed at the wrapper:
    # every engine the store creates from now on is traced.
    import sqlalchemy

    from cds_service.store import sql

    sql.create_engine = sqlalchemy.create_engine


def setup_tracing(
    console: bool = False, processors: list[SpanProcessor] | None = None, otlp_endpoint: str = ""
) -> TracerProvider:
    """Install a tracer provider (once per process); extra processors are added to the existing one.

    With ``otlp_endpoint`` spans go to an OpenTelemetry collector over OTLP/HTTP in batches; Triton's
    own spans join the same trace through the W3C ``traceparent`` the inference client sends. Every
    processor given (and every exporter) sees :func:`scrubbed` spans only.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=service_resource(), sampler=ParentBased(root=DropRootClientSpans()))
        trace.set_tracer_provider(provider)
        provider.add_span_processor(RedactHttpSpans())  # first: runs before the exporters below
        if console:
            provider.add_span_processor(Scrubbed(SimpleSpanProcessor(ConsoleSpanExporter())))
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
            provider.add_span_processor(Scrubbed(BatchSpanProcessor(exporter)))
        instrument_clients(provider)
    for processor in processors or []:
        provider.add_span_processor(Scrubbed(processor))
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME, __version__)
