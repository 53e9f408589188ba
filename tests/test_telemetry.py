"""cds_service.telemetry and the telemetry parts of cds_service.metrics / cdshooks.jwt: what an exported
span may carry (no identifiers, status from the outcome), the resource, probes, JWT spans and 401s
counted by reason. The end-to-end trace through a real OTLP exporter: tests/test_telemetry_trace.py."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from cds_service.cdshooks.jwt import FAILURE_REASONS, JwtVerifier, TrustedIssuer, failure_reason, sign_request_jwt
from cds_service.errors import AuthenticationError
from cds_service.metrics import REGISTRY
from cds_service.telemetry import is_probe, redact_url, service_resource, tracer

UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://pacs.example/dicom-web/studies/{UID}/series/{UID}/instances/{UID}",
            "https://pacs.example/dicom-web/studies/{id}/series/{id}/instances/{id}",
        ),
        ("https://ehr.example:8443/fhir/Endpoint/pacs-main?x=1", "https://ehr.example:8443/fhir/Endpoint/{id}"),
        (
            "https://ehr.example/fhir/ImagingStudy?patient=Patient/smart-1288992",
            "https://ehr.example/fhir/ImagingStudy",
        ),
        ("https://user:secret@ehr.example/fhir/Patient/abc123", "https://ehr.example/fhir/Patient/{id}"),
        ("http://jwks.example/.well-known/jwks.json", "http://jwks.example/.well-known/jwks.json"),
        ("http://[::1/x", "<unparsable>"),
    ],
)
def test_client_urls_keep_their_shape_only(url, expected):
    assert redact_url(url) == expected


def test_an_exception_event_keeps_its_type_and_frames_never_its_message(spans):
    with pytest.raises(OSError), tracer().start_as_current_span("fetch"):
        raise OSError(f'Could not find instance "{UID}"')
    (span,) = spans.get_finished_spans()
    (event,) = span.events
    assert event.attributes["exception.type"] == "OSError"
    assert "exception.message" not in event.attributes
    assert "test_telemetry.py:" in event.attributes["exception.stacktrace"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "OSError"
    assert UID not in repr((span.attributes, span.events, span.status.description))


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        ("analysed", StatusCode.OK),
        ("no-study", StatusCode.OK),
        ("InferenceError", StatusCode.ERROR),
        ("internal-error", StatusCode.ERROR),
    ],
)
def test_a_span_status_follows_its_outcome(spans, outcome, status):
    with tracer().start_as_current_span("hook") as span:
        span.set_attribute("hipcad.outcome", outcome)
    (finished,) = spans.get_finished_spans()
    assert finished.status.status_code is status


def test_client_calls_outside_a_trace_start_none_inside_one_they_do(spans):
    tracer().start_span("ServerReady", kind=SpanKind.CLIENT).end()
    with tracer().start_as_current_span("hook"):
        tracer().start_span("GET", kind=SpanKind.CLIENT, attributes={"url.full": f"https://p/studies/{UID}"}).end()
    names = [(span.name, span.attributes.get("url.full")) for span in spans.get_finished_spans()]
    assert names == [("GET", "https://p/studies/{id}"), ("hook", None)]


def test_the_resource_names_the_pod_and_honours_otel_service_name(monkeypatch):
    monkeypatch.setenv("POD_NAME", "cds-service-7d9f-abcde")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "hipcad-site-a")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    attributes = service_resource().attributes
    assert attributes["service.instance.id"] == "cds-service-7d9f-abcde"
    assert attributes["service.name"] == "hipcad-site-a"
    assert attributes["deployment.environment"] == "prod"
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("HOSTNAME", "cds-service-7d9f-fghij")
    attributes = service_resource().attributes
    assert attributes["service.instance.id"] == "cds-service-7d9f-fghij"
    assert attributes["service.name"] == "hipcad-cds-service"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/startupz", "/metrics"])
def test_probes_are_not_traced(path):
    assert is_probe({"type": "http", "path": path})
    assert not is_probe({"type": "http", "path": "/cds-services/hip-fracture-order-select"})


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("hipcad_auth_failures_total", {"reason": reason}) or 0.0


def test_jwt_verification_is_spanned_and_a_refusal_counted_by_reason(spans, ehr_keys):
    private, public = ehr_keys
    verifier = JwtVerifier([TrustedIssuer("ehr", public_key_pem=public.read_bytes())])
    audience = "http://hipcad.test/cds-services/x"
    token = sign_request_jwt(private, "ehr", audience)
    assert asyncio.run(verifier.verify(f"Bearer {token}", audience))["iss"] == "ehr"
    before = {reason: failures(reason) for reason in ("audience", "replay", "issuer", "missing")}
    cases = [
        (sign_request_jwt(private, "ehr", "http://elsewhere/"), "audience"),
        (token, "replay"),
        (sign_request_jwt(private, "someone-else", audience), "issuer"),
    ]
    for bad, _ in cases:
        with pytest.raises(AuthenticationError):
            asyncio.run(verifier.verify(f"Bearer {bad}", audience))
    with pytest.raises(AuthenticationError):
        asyncio.run(verifier.verify(None, audience))
    for reason in ("audience", "replay", "issuer", "missing"):
        assert failures(reason) == before[reason] + 1, reason
    verified = [span for span in spans.get_finished_spans() if span.name == "jwt_verify"]
    assert len(verified) == 5
    assert [span.attributes.get("hipcad.auth_failure") for span in verified] == [
        None,
        "audience",
        "replay",
        "issuer",
        "missing",
    ]
    assert all(span.status.status_code is StatusCode.ERROR for span in verified[1:])


def test_every_refusal_reason_is_from_the_fixed_set():
    assert failure_reason(AuthenticationError("JWT kid 'x' not found in the JWKS at u")) == "key"
    assert failure_reason(AuthenticationError("JWKS unreachable: u (ConnectError)")) == "jwks"
    assert failure_reason(AuthenticationError("something new")) == "other"
    assert failure_reason(ValueError("bug")) == "error"
    assert len({reason for _, reason in FAILURE_REASONS}) < 20  # a bounded label set
