"""No input answers 5xx (security issue #9): property-based fuzzing of the REAL running service.

The service runs under uvicorn in a thread on a free port, wired to the real local Triton; Hypothesis
sends signed requests built from the hook examples with every field mutated (tests/fuzz_strategies.py)
over one persistent httpx.Client. Every answer must be 200, 400, 401, 412 or 413, and the service must
still answer afterwards. ``HIPCAD_FUZZ_EXAMPLES`` sets the number of examples (150 by default);
``bench/fuzz.py`` runs ten thousand and more. Deterministic regression tests pin each failure found.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from cds_service.app import create_app
from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.demo import free_port, running_service
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import TritonServer
from cds_service.settings import Settings
from tests.fuzz_strategies import ALLOWED, ISSUER, Case, cases, send

EXAMPLES = int(os.environ.get("HIPCAD_FUZZ_EXAMPLES", "150"))
SELECT = "/cds-services/hip-fracture-order-select"
VIEW = "/cds-services/hip-fracture-patient-view"
LIMIT = 200_000  # max_request_bytes of the fuzzed service


def studies_for(dicom_store: Path) -> dict[str, Any]:
    ds = pydicom.dcmread(next(dicom_store.rglob("*.dcm")), stop_before_pixels=True)
    return imaging_study_bundle(ds, "pat-hip-1", dicom_store.as_uri())


def fuzz_settings(ehr_keys: tuple[bytes, Path], dicom_store: Path, folder: Path, triton_url: str) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=free_port(),
        public_base_url="",
        jwt_public_key_file=ehr_keys[1],
        dicom_folder=dicom_store,
        output_folder=folder / "out",
        feedback_db=folder / "feedback.sqlite3",
        triton_url=triton_url,
        hook_deadline_s=5.0,
        max_request_bytes=LIMIT,
    )


@pytest.fixture(scope="module")
def live(
    ehr_keys: tuple[bytes, Path], dicom_store: Path, triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """The service on the real Triton, served by uvicorn in a thread: (base URL, EHR key, studies Bundle)."""
    settings = fuzz_settings(ehr_keys, dicom_store, tmp_path_factory.mktemp("fuzz"), triton.grpc_url)
    with running_service(settings) as base_url:
        yield base_url, ehr_keys[0], studies_for(dicom_store)


@pytest.fixture(scope="module")
def bare(
    ehr_keys: tuple[bytes, Path], dicom_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """The service under uvicorn with no Triton behind it: enough for requests refused before analysis."""
    settings = fuzz_settings(ehr_keys, dicom_store, tmp_path_factory.mktemp("bare"), f"127.0.0.1:{free_port()}")
    with running_service(settings) as base_url:
        yield base_url, ehr_keys[0], studies_for(dicom_store)


def headers(private_key: bytes, url: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign_request_jwt(private_key, ISSUER, url)}", "Content-Type": "application/json"}


def post(service: tuple[str, bytes, Any], path: str, body: bytes | dict, **kwargs: Any) -> httpx.Response:
    base_url, key, _ = service
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return httpx.post(base_url + path, content=content, headers=headers(key, base_url + path), timeout=60, **kwargs)


def issue(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


# The property ------------------------------------------------------------------------------------
def test_no_input_answers_5xx(live):
    base_url, key, studies = live
    seen: dict[int, int] = {}
    with httpx.Client(timeout=60) as client:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=cases(studies))
        def check(case: Case) -> None:
            response = send(client, base_url, key, case)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code in ALLOWED, (response.status_code, response.text[:500])

        check()
        assert client.get(base_url + "/healthz").status_code == 200
    assert httpx.get(base_url + "/healthz").status_code == 200
    assert seen.get(200) and seen.get(400), seen  # the fuzz reaches both the pipeline and the refusals


def test_connection_survives_bad_requests(live):
    """One keep-alive connection: refusals and the last-resort answers never drop it."""
    base_url, key, studies = live
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.connect()
    sock = connection.sock
    bad = load_example("order-select.json")
    bad["context"]["draftOrders"]["entry"][0]["resource"]["code"] = 5
    bodies = [
        json.dumps(bad).encode(),
        b"[" * 100 + b"]" * 100,
        b'{"hook": ' + b"1" * 10_000 + b"}",
        b"{not json",
        json.dumps(with_studies(load_example("order-select-irrelevant.json"), studies)).encode(),
    ]
    for body in bodies:
        connection.request("POST", SELECT, body=body, headers=headers(key, base_url + SELECT))
        response = connection.getresponse()
        response.read()
        assert response.status in (200, 400)
        assert connection.sock is sock, "the server closed the connection"
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    assert connection.sock is sock
    connection.close()


# Deterministic regressions (each was a 500, a 200 or a dropped connection before) --------------------
def test_oversize_body_is_413_with_content_length(bare):
    response = post(bare, SELECT, b'{"hook": "' + b"x" * (LIMIT + 1) + b'"}')
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-long"


def test_oversize_body_is_413_when_streamed_without_content_length(bare):
    base_url, key, _ = bare
    chunks = [b'{"hook": "'] + [b"x" * 10_000] * 30 + [b'"}']
    response = httpx.post(base_url + SELECT, content=iter(chunks), headers=headers(key, base_url + SELECT))
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-long"


def _raw(base_url: str, request: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(request)
        except OSError:  # the server may answer and close before reading everything we send
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and len(answer) > 200:
                break
        return answer


def test_lying_content_length_is_never_5xx(bare):
    base_url, key, _ = bare

    def head(length: str) -> bytes:
        auth = headers(key, base_url + SELECT)["Authorization"]  # a fresh JWT each time (jti replay)
        return (
            f"POST {SELECT} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()

    # Declares more than the limit, sends little: refused at once, from the header.
    assert _raw(base_url, head(str(LIMIT + 1)) + b"{}").startswith(b"HTTP/1.1 413")
    # Declares little, sends far more than the limit: only the declared bytes are read (invalid JSON).
    assert _raw(base_url, head("10") + b"x" * (LIMIT * 2)).startswith(b"HTTP/1.1 400")
    # A Content-Length that is not a number (refused by uvicorn or by the service: 400 either way).
    assert _raw(base_url, head("-5") + b"{}").startswith(b"HTTP/1.1 400")


def test_100_deep_nesting_is_400(bare):
    response = post(bare, SELECT, b'{"hook": ' + b"[" * 100 + b"]" * 100 + b"}")
    assert response.status_code == 400 and "nested deeper" in issue(response)


def test_10000_digit_number_is_400(bare):
    response = post(bare, SELECT, b'{"hook": "order-select", "hookInstance": ' + b"7" * 10_000 + b"}")
    assert response.status_code == 400 and "longer than" in issue(response)


def test_draft_order_code_of_wrong_type_is_400(bare):
    request = load_example("order-select.json")
    request["context"]["draftOrders"]["entry"][0]["resource"]["code"] = 5
    response = post(bare, SELECT, request)
    assert response.status_code == 400
    assert "context.draftOrders.entry.0.resource.code: must be an object" in issue(response)


def test_selection_that_is_not_a_string_is_400(bare):
    request = load_example("order-select.json")
    request["context"]["selections"] = [3]
    response = post(bare, SELECT, request)
    assert response.status_code == 400 and "context.selections.0: must be a string" in issue(response)


def test_selection_not_in_draft_orders_is_400(bare):
    request = load_example("order-select.json")
    request["context"]["selections"] = ["ServiceRequest/not-drafted"]
    response = post(bare, SELECT, request)
    assert response.status_code == 400 and "context.selections" in issue(response)
    assert "not-drafted" not in issue(response)  # messages name fields, never values


def test_prefetched_imaging_study_with_series_of_wrong_type_is_400(bare):
    request = with_studies(load_example("order-select.json"), bare[2])
    request["prefetch"]["studies"]["entry"][0]["resource"]["series"] = "x"
    response = post(bare, SELECT, request)
    assert response.status_code == 400
    assert "prefetch.studies.entry.0.resource.series: must be a list" in issue(response)


def test_patient_view_without_patient_id_is_400(bare):
    request = load_example("patient-view.json")
    del request["context"]["patientId"]
    response = post(bare, VIEW, request)
    assert response.status_code == 400 and "context.patientId: is required" in issue(response)


def test_sandbox_override_feedback_is_accepted(bare):
    body = {
        "feedback": [
            {
                "card": "0f0e0d0c-0000-4000-8000-000000000000",
                "outcome": "overridden",
                "overrideReason": {"reason": {"system": "http://snomed.info/sct", "code": "428119001"}},
                "outcomeTimestamp": "2026-11-22T10:05:00.000Z",
            }
        ]
    }
    assert post(bare, SELECT + "/feedback", body).status_code == 200


def test_oversize_feedback_is_413(bare):
    response = post(bare, SELECT + "/feedback", b'{"feedback": "' + b"x" * (LIMIT + 1) + b'"}')
    assert response.status_code == 413


# The last resort ---------------------------------------------------------------------------------
class BrokenPipeline:
    """A pipeline with a bug: every hook raises something unexpected."""

    viewer_link = None

    async def handle(self, request: Any, caller: str = "") -> Any:
        raise RuntimeError("a bug (this message must not reach the response)")

    async def close(self) -> None:
        pass


def test_unexpected_error_in_the_hook_is_an_honest_card_not_a_500(ehr_keys, dicom_store, tmp_path, caplog):
    settings = fuzz_settings(ehr_keys, dicom_store, tmp_path, "127.0.0.1:1").model_copy(update={"port": 8080})
    with TestClient(create_app(settings, pipeline=BrokenPipeline()), base_url=settings.base_url()) as client:
        url = settings.base_url() + SELECT
        response = client.post(SELECT, json=load_example("order-select.json"), headers=headers(ehr_keys[0], url))
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert card["indicator"] == "info" and card["summary"].startswith("AI hip fracture analysis unavailable")
    assert "bug" not in json.dumps(response.json())
    logged = [r for r in caplog.records if "unexpected error while answering a hook" in r.getMessage()]
    assert logged and "RuntimeError" in logged[0].getMessage()
    assert "pat-hip-1" not in caplog.text


@pytest.mark.parametrize("started", ["now-tz-less", "date-only", "year-only", "not a date", "offset+14"])
def test_odd_started_values_are_analysed_not_500(live, started):
    """ImagingStudy.started is read as a string: time-zone-less, partial or unparsable values still answer."""
    now = datetime.now(UTC)
    value = {
        "now-tz-less": now.strftime("%Y-%m-%dT%H:%M:%S"),
        "date-only": now.strftime("%Y-%m-%d"),
        "year-only": now.strftime("%Y"),
        "not a date": "not a date",
        "offset+14": now.strftime("%Y-%m-%dT%H:%M:%S+14:00"),
    }[started]
    request = with_studies(load_example("order-select.json"), live[2])
    request["prefetch"]["studies"]["entry"][0]["resource"]["started"] = value
    response = post(live, SELECT, request)
    assert response.status_code == 200, response.text[:300]
    summaries = [card["summary"] for card in response.json()["cards"]]
    assert all("internal error" not in card.get("detail", "") for card in response.json()["cards"]), summaries
