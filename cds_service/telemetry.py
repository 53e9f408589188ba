"""OpenTelemetry tracing: one span per pipeline stage, no patient data in attributes."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from cds_service import __version__

TRACER_NAME = "cds_service"


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
