"""OpenTelemetry tracing: one span per pipeline stage, no patient data in attributes."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from cds_service import __version__

TRACER_NAME = "cds_service"


class RedactHttpSpans(SpanProcessor):
    """FastAPI's own server spans record ``url.path`` and ``url.query``: viewer tokens travel in the
    path and a hostile client can put anything in either. Paths keep their route shape only
    (:func:`cds_service.logs.redact_path`), queries are dropped, before any exporter sees the span."""

    def on_start(self, span, parent_context=None) -> None:  # type: ignore[no-untyped-def]
        from cds_service.logs import redact_path

        attributes = span.attributes or {}
        if "url.path" in attributes:
            span.set_attribute("url.path", redact_path(str(attributes["url.path"])))
        if "url.query" in attributes:
            span.set_attribute("url.query", "")
        if "http.target" in attributes:
            span.set_attribute("http.target", redact_path(str(attributes["http.target"]).split("?", 1)[0]))


def setup_tracing(
    console: bool = False, processors: list[SpanProcessor] | None = None, otlp_endpoint: str = ""
) -> TracerProvider:
    """Install a tracer provider (once per process); extra processors are added to the existing one.

    With ``otlp_endpoint`` spans go to an OpenTelemetry collector over OTLP/HTTP in batches; Triton's
    own spans join the same trace through the W3C ``traceparent`` the inference client sends.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(
            resource=Resource.create({"service.name": "hipcad-cds-service", "service.version": __version__})
        )
        trace.set_tracer_provider(provider)
        provider.add_span_processor(RedactHttpSpans())  # first: runs before the exporters below
        if console:
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
            provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in processors or []:
        provider.add_span_processor(processor)
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME, __version__)
