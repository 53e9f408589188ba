"""One trace per hook, through the production exporter to an OTLP receiver, with no identifier in it.

A real ``cds-service serve`` process (SQLite store, the real local Triton, an issuer whose JWKS is
fetched over HTTP) exports its spans with its OTLP/HTTP exporter (``HIPCAD_OTLP_ENDPOINT``). The
receiver is a **stand-in for the OpenTelemetry collector** (whose binary no package registry ships):
an OTLP/HTTP endpoint written here that decodes each ``ExportTraceServiceRequest`` with the
``opentelemetry-proto`` bindings (OTLP specification, "OTLP/HTTP": binary protobuf POSTed to
``/v1/traces``). It also serves the EHR's JWKS. The service's /metrics is compared with what the
dashboard and the alerts query.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pydicom
import pytest
from google.protobuf.json_format import MessageToJson
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from cds_service.cdshooks.jwt import public_jwks, sign_request_jwt
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import free_port
from tests.servers.base import ServerProcess
from tests.test_alerts import dashboard_expressions, exposed_names, queried_metrics, rule_groups

pytestmark = [pytest.mark.triton, pytest.mark.slow]

PATH = "/cds-services/hip-fracture-order-select"
ISSUER = "trace-test-ehr"
SEEDS = (411, 412)


@dataclass
class OtlpReceiver:
    """OTLP/HTTP trace receiver (collector stand-in) and JWKS host on one local port."""

    jwks: dict
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    jwks_fetches: int = 0

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.raw.append(body)
                self.answer(ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

            def do_GET(self) -> None:
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                receiver.jwks_fetches += 1
                self.answer(json.dumps(receiver.jwks).encode(), "application/json")

            def answer(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, str], str, Span]]:
        """(resource attributes, instrumentation scope, span) of every span received."""
        found = []
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found += [(resource, scope_spans.scope.name, span) for span in scope_spans.spans]
        return found


def attributes(span: Span) -> dict[str, object]:
    return {
        a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes if a.value.WhichOneof("value")
    }


@dataclass
class Traced:
    url: str
    receiver: OtlpReceiver
    requests: list[dict]
    tokens: list[str]
    identifiers: list[str]
    metrics: str


@pytest.fixture(scope="module")
def traced(triton, ehr_keys, tmp_path_factory) -> Iterator[Traced]:
    from cds_service.training.phantoms import write_sample_study

    private, public = ehr_keys
    folder = tmp_path_factory.mktemp("trace-store")
    for seed in SEEDS:
        write_sample_study(folder, seed=seed)
    receiver = OtlpReceiver(public_jwks(public.read_bytes()))
    http, receiver_url = receiver.serve()
    logs = tmp_path_factory.mktemp("trace-logs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HIPCAD_HOST": "127.0.0.1",
        "HIPCAD_PORT": str(port),
        "HIPCAD_PUBLIC_BASE_URL": url,
        "HIPCAD_JWT_ISSUERS": json.dumps([{"iss": ISSUER, "jwks_url": f"{receiver_url}/jwks.json"}]),
        "HIPCAD_JWT_PUBLIC_KEY_FILE": str(logs / "none.pem"),
        "HIPCAD_DICOM_FOLDER": str(folder),
        "HIPCAD_TRITON_URL": triton.grpc_url,
        "HIPCAD_HOOK_DEADLINE_S": "60",
        "HIPCAD_FEEDBACK_DB": str(logs / "feedback.sqlite3"),
        "HIPCAD_OTLP_ENDPOINT": receiver_url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "hipcad-trace-test",
        "POD_NAME": "cds-service-trace-test-pod",
    }
    process = ServerProcess(
        "traced-service", [str(Path(sys.executable).parent / "cds-service"), "serve"], logs / "service.log", env=env
    )
    process.start(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200, timeout_s=90)
    try:
        template = load_example("order-select.json")
        requests, tokens, identifiers = [], [], [template["context"]["patientId"]]
        for seed in SEEDS:
            ds = pydicom.dcmread(folder / f"sample-{seed}.dcm", stop_before_pixels=True)
            identifiers += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
            requests.append(
                with_studies(template, imaging_study_bundle(ds, template["context"]["patientId"], folder.as_uri()))
            )
        # The EHR stand-in is this test process, whose httpx other tests may have instrumented: its requests
        # must carry no traceparent (an unsampled parent would make the service drop the whole trace).
        with suppress_instrumentation():
            for probe in ("/healthz", "/readyz", "/startupz", "/metrics"):
                httpx.get(url + probe, timeout=10)
            for body in requests:
                token = sign_request_jwt(private, ISSUER, url + PATH)
                tokens.append(token)
                response = httpx.post(url + PATH, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=90)
                assert response.status_code == 200, response.text
                assert response.json()["cards"], "each phantom study is analysed into a card"
            refused = httpx.post(
                url + PATH, json=requests[0], headers={"Authorization": f"Bearer {tokens[0]}"}, timeout=30
            )
            assert refused.status_code == 401  # the replayed token
            metrics = httpx.get(url + "/metrics", timeout=10).text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(s.name == "hook" for _, _, s in receiver.spans()) < len(SEEDS):
            time.sleep(0.2)
        time.sleep(1)  # the batch with the last server spans
        yield Traced(url, receiver, requests, tokens, identifiers, metrics)
    finally:
        process.stop()
        http.shutdown()


def traces(traced: Traced) -> dict[bytes, list[tuple[str, Span]]]:
    grouped: dict[bytes, list[tuple[str, Span]]] = {}
    for _, scope, span in traced.receiver.spans():
        grouped.setdefault(span.trace_id, []).append((scope, span))
    return grouped


def test_one_trace_per_hook_with_the_jwt_check_and_client_spans_in_it(traced):
    hook_traces = [spans for spans in traces(traced).values() if any(s.name == "hook" for _, s in spans)]
    assert len(hook_traces) == len(SEEDS)
    for spans in hook_traces:
        names = [s.name for _, s in spans]
        assert names.count("hook") == 1
        roots = [s for _, s in spans if not s.parent_span_id]
        assert len(roots) == 1 and roots[0].kind == Span.SPAN_KIND_SERVER, names
        assert "jwt_verify" in names
        clients = {scope for scope, s in spans if s.kind == Span.SPAN_KIND_CLIENT}
        assert "opentelemetry.instrumentation.grpc" in clients, (names, clients)  # Triton
        hook = next(s for _, s in spans if s.name == "hook")
        assert hook.status.code != Status.STATUS_CODE_ERROR
    # The EHR's JWKS is fetched once (then cached): an httpx client span under the first hook's jwt_verify.
    assert traced.receiver.jwks_fetches == 1
    first = hook_traces[0]
    by_id = {s.span_id: s for _, s in first}
    (fetch,) = [s for scope, s in first if scope == "opentelemetry.instrumentation.httpx"]
    assert by_id[fetch.parent_span_id].name == "jwt_verify"
    fetched = attributes(fetch)
    assert str(fetched.get("url.full") or fetched["http.url"]).endswith("/jwks.json")  # semconv old or new


def test_each_hook_trace_has_the_stores_sqlalchemy_client_spans(traced):
    for spans in traces(traced).values():
        if any(s.name == "hook" for _, s in spans):
            assert any(scope == "opentelemetry.instrumentation.sqlalchemy" for scope, _ in spans)


def test_a_refused_token_is_an_error_span_with_its_reason(traced):
    verified = [s for _, _, s in traced.receiver.spans() if s.name == "jwt_verify"]
    refused = [s for s in verified if attributes(s).get("hipcad.auth_failure")]
    assert [attributes(s)["hipcad.auth_failure"] for s in refused] == ["replay"]
    assert refused[0].status.code == Status.STATUS_CODE_ERROR
    assert 'hipcad_auth_failures_total{reason="replay"} 1.0' in traced.metrics


def test_probes_are_not_traced(traced):
    for _, _, span in traced.receiver.spans():
        values = " ".join(str(v) for v in attributes(span).values())
        assert not any(
            probe in values or probe in span.name for probe in ("/healthz", "/readyz", "/startupz", "/metrics")
        )


def test_the_resource_names_the_service_and_the_pod(traced):
    resources = {tuple(sorted(r.items())) for r, _, _ in traced.receiver.spans()}
    assert len(resources) == 1
    resource = dict(next(iter(resources)))
    assert resource["service.name"] == "hipcad-trace-test"
    assert resource["service.instance.id"] == "cds-service-trace-test-pod"


def test_no_identifier_nor_token_anywhere_in_the_exported_spans(traced):
    assert traced.receiver.requests
    exported = "\n".join(MessageToJson(r) for r in traced.receiver.requests)
    raw = b"".join(traced.receiver.raw)
    for secret in traced.identifiers + traced.tokens:
        assert secret not in exported
        assert secret.encode() not in raw


def test_the_dashboard_and_the_alerts_query_what_the_running_service_exposes(traced, triton):
    families = [(f.name, f.type) for f in text_string_to_metric_families(traced.metrics)]
    triton_metrics = httpx.get(f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=10).text
    families += [(f.name, f.type) for f in text_string_to_metric_families(triton_metrics)]
    exposed = exposed_names(families)
    alerts = [rule["expr"] for group in rule_groups()["groups"] for rule in group["rules"]]
    missing = queried_metrics(dashboard_expressions() + alerts) - exposed
    assert not missing
