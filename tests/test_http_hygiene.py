"""HTTP hygiene of the real ``cds-service serve`` process (issue 30), over real sockets.

A slow-loris body is answered 408 within ``HIPCAD_BODY_READ_TIMEOUT_S`` while ``/healthz`` keeps
answering; a 200–300 kB request head is a clean 431 the client can read (not a 400 and a TCP reset);
a hook or feedback body not labelled JSON is a 415; duplicate JSON keys are a 400 that names no
patient data; a client that disconnects mid-body leaves one log line, no ERROR and no traceback.
The service runs as a subprocess (uvicorn with the shipped options, JSON logs to a file), JWTs on.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.cdshooks.requests import load_json
from cds_service.demo import free_port
from cds_service.ehr import load_example, with_studies
from cds_service.errors import BadRequestError
from cds_service.http_limits import is_json_media_type
from tests.servers.base import ServerProcess

ISSUER = "hipcad-demo-ehr"
SELECT = "/cds-services/hip-fracture-order-select"
FEEDBACK = SELECT + "/feedback"
BODY_TIMEOUT_S = 2.0
HEADER_LIMIT = 32_768  # the shipped HIPCAD_MAX_HEADER_BYTES


@dataclass
class Served:
    base: str
    port: int
    log: Path
    key: bytes

    def headers(self, path: str, content_type: str | None = "application/json") -> dict[str, str]:
        token = sign_request_jwt(self.key, ISSUER, self.base + path)
        headers = {"Authorization": f"Bearer {token}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_lines(self, since: int = 0) -> list[dict[str, Any]]:
        """The JSON log lines written after byte ``since`` (a line that is not JSON fails the test)."""
        text = self.log.read_bytes()[since:].decode(errors="replace")
        lines = []
        for line in filter(str.strip, text.splitlines()):
            try:
                lines.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON log line: {line[:200]!r}") from None
        return lines


@pytest.fixture(scope="module")
def served(ehr_keys: tuple[bytes, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("hygiene")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("HIPCAD_")},
        "HIPCAD_HOST": "127.0.0.1",
        "HIPCAD_PORT": str(port),
        "HIPCAD_PUBLIC_BASE_URL": "",
        "HIPCAD_JWT_PUBLIC_KEY_FILE": str(ehr_keys[1]),
        "HIPCAD_DICOM_FOLDER": str(folder / "dicom"),
        "HIPCAD_FEEDBACK_DB": str(folder / "feedback.sqlite3"),
        "HIPCAD_OUTPUT_FOLDER": str(folder / "out"),
        "HIPCAD_TRITON_URL": f"127.0.0.1:{free_port()}",  # nothing listens: no analysis is needed here
        "HIPCAD_BODY_READ_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "HIPCAD_OTLP_ENDPOINT": "",
        "HIPCAD_OTEL_CONSOLE": "false",
        "HIPCAD_LOG_FORMAT": "json",
        "HIPCAD_LOG_LEVEL": "INFO",
    }
    (folder / "dicom").mkdir()
    process = ServerProcess(
        "cds-service", [sys.executable, "-m", "cds_service.cli", "serve"], folder / "serve.log", env
    )
    process.start(lambda: httpx.get(base + "/healthz", timeout=1).status_code == 200, timeout_s=90)
    yield Served(base, port, folder / "serve.log", ehr_keys[0])
    process.stop()


def hook_request() -> dict[str, Any]:
    """A valid order-select request the service answers without any image store (no studies)."""
    request = with_studies(load_example("order-select.json"), None)  # type: ignore[arg-type]
    request.pop("fhirServer", None)
    return request


def head(path: str, headers: dict[str, str], content_length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {content_length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes; a reset or a timeout fails the test."""
    sock.settimeout(timeout_s)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def status_and_body(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def healthz_seconds(served: Served) -> float:
    started = time.monotonic()
    assert httpx.get(served.base + "/healthz", timeout=5).status_code == 200
    return time.monotonic() - started


# 408 ------------------------------------------------------------------------------------------------
def test_a_slow_loris_body_is_a_408_within_the_timeout_and_the_service_keeps_answering(served: Served):
    body = json.dumps(hook_request()).encode()
    sock = socket.create_connection(("127.0.0.1", served.port))
    stop = threading.Event()

    def trickle() -> None:  # one byte every 200 ms: each read succeeds, the body never completes in time
        for byte in body[: len(body) // 2]:
            if stop.wait(0.2):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    started = time.monotonic()
    sock.sendall(head(SELECT, served.headers(SELECT), len(body)))
    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        time.sleep(BODY_TIMEOUT_S / 2)
        assert healthz_seconds(served) < 0.5  # the stalled request holds no worker
        raw = read_until_closed(sock, BODY_TIMEOUT_S + 5)
        took = time.monotonic() - started
    finally:
        stop.set()
        sender.join(5)
        sock.close()
    status, headers, outcome = status_and_body(raw)
    assert status == 408, raw[:300]
    assert BODY_TIMEOUT_S - 0.1 <= took <= BODY_TIMEOUT_S + 1.5
    assert headers["connection"] == "close"
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "timeout"
    assert healthz_seconds(served) < 0.5


def trickle_until_closed(sock: socket.socket, data: bytes, limit_s: float) -> tuple[bytes, float]:
    """Send ``data`` a byte every 200 ms (cycling) until the server closes; (what it sent, seconds)."""
    sock.settimeout(0.2)
    started, received, index = time.monotonic(), b"", 0
    while time.monotonic() - started < limit_s:
        try:
            sock.sendall(data[index % len(data) : index % len(data) + 1])
            index += 1
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset: closed too
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def test_a_slow_loris_head_is_a_408_within_the_timeout(served: Served):
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        received, took = trickle_until_closed(sock, b"X-Slow: header-bytes-forever\r\n", BODY_TIMEOUT_S + 8)
    assert took <= BODY_TIMEOUT_S + 1.5, "the connection was held open"
    status, headers, outcome = status_and_body(received)
    assert status == 408 and headers["connection"] == "close" and outcome["issue"][0]["code"] == "timeout"


@pytest.mark.parametrize(
    ("request_head", "answer"),
    [
        (f"POST {SELECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n", b"HTTP/1.1 401"),
        ("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"HTTP/1.1 200"),
    ],
    ids=["unauthenticated-post", "get-with-a-body"],
)
def test_a_body_nobody_reads_cannot_hold_the_connection(served: Served, request_head: str, answer: bytes):
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(f"{request_head}Content-Length: 1000000\r\n\r\n".encode())
        received, took = trickle_until_closed(sock, b"x", BODY_TIMEOUT_S + 8)
    assert received.startswith(answer), received[:200]
    assert took <= BODY_TIMEOUT_S + 1.5, "the connection was held open"


def test_a_connection_that_sends_nothing_is_closed(served: Served):
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.settimeout(BODY_TIMEOUT_S + 8)
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started <= BODY_TIMEOUT_S + 1.5


# 431 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [200_000, 300_000])
def test_oversized_request_headers_are_a_clean_431(served: Served, size: int):
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {'a' * size}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(request)  # the server reads the rest of the head after answering: no reset here
        raw = read_until_closed(sock, 10)  # ConnectionResetError fails the test
    status, headers, outcome = status_and_body(raw)
    assert status == 431, raw[:300]
    assert headers["connection"] == "close" and headers["content-type"] == "application/fhir+json"
    assert outcome["issue"][0]["code"] == "too-long" and str(HEADER_LIMIT) in outcome["issue"][0]["diagnostics"]
    # An ordinary HTTP client reads the same answer.
    assert httpx.get(served.base + "/healthz", headers={"X-Padding": "a" * size}, timeout=10).status_code == 431
    assert healthz_seconds(served) < 0.5


def test_headers_under_the_limit_are_served(served: Served):
    padding = "a" * (HEADER_LIMIT - 2_000)
    assert httpx.get(served.base + "/healthz", headers={"X-Padding": padding}, timeout=10).status_code == 200
    response = httpx.post(
        served.base + SELECT, json=hook_request(), headers={**served.headers(SELECT), "X-Padding": padding}, timeout=30
    )
    assert response.status_code == 200, response.text


# 415 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [SELECT, FEEDBACK])
@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_a_body_not_labelled_json_is_a_415(served: Served, path: str, content_type: str | None):
    body = json.dumps(hook_request() if path == SELECT else {"feedback": []}).encode()
    response = httpx.post(served.base + path, content=body, headers=served.headers(path, content_type), timeout=30)
    assert response.status_code == 415, response.text
    assert response.json()["issue"][0]["code"] == "not-supported"


def test_json_with_parameters_is_accepted(served: Served):
    body = json.dumps(hook_request()).encode()
    headers = served.headers(SELECT, "Application/JSON; charset=utf-8")
    assert httpx.post(served.base + SELECT, content=body, headers=headers, timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "json_"),
    [
        ("application/json", True),
        ("application/fhir+json;fhirVersion=4.0", True),
        (" APPLICATION/JSON ; charset=UTF-8", True),
        ("text/json", False),
        ("application/jsonp", False),
        ("text/plain", False),
        ("", False),
        (None, False),
    ],
)
def test_json_media_types(content_type: str | None, json_: bool):
    assert is_json_media_type(content_type) is json_


# 400 on duplicate keys ------------------------------------------------------------------------------
def test_duplicate_json_keys_are_a_400_naming_no_patient_data(served: Served):
    since = served.log_size()
    text = json.dumps(hook_request())
    marker = '"patientId": "pat-hip-1"'
    assert marker in text
    body = text.replace(marker, '"patientId": "pat-DUPKEY-first", "patientId": "pat-DUPKEY-second"').encode()
    response = httpx.post(served.base + SELECT, content=body, headers=served.headers(SELECT), timeout=30)
    assert response.status_code == 400, response.text
    (issue,) = response.json()["issue"]
    assert issue["code"] == "invalid" and "duplicate key" in issue["diagnostics"]
    assert "DUPKEY" not in response.text and "patientId" not in response.text
    time.sleep(0.2)
    assert not [line for line in served.log_lines(since) if "DUPKEY" in json.dumps(line)]


def test_duplicate_keys_are_refused_at_any_depth():
    with pytest.raises(BadRequestError, match="duplicate key"):
        load_json(b'{"a": [{"b": 1, "c": {"d": 1, "d": 2}}]}', max_depth=8, max_number_digits=8)
    assert load_json(b'{"a": [{"d": 1}, {"d": 2}]}', max_depth=8, max_number_digits=8) == {"a": [{"d": 1}, {"d": 2}]}


# A client that went away ----------------------------------------------------------------------------
def test_a_client_that_disconnects_mid_body_logs_no_error_and_no_traceback(served: Served):
    since = served.log_size()
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(head(SELECT, served.headers(SELECT), 5_000) + b'{"hook": "order-')
        time.sleep(0.3)  # the service is reading the body now
    deadline = time.monotonic() + 5
    while not any("disconnected" in line["message"] for line in served.log_lines(since)):
        assert time.monotonic() < deadline, served.log_lines(since)
        time.sleep(0.05)
    lines = served.log_lines(since)
    assert [line["level"] for line in lines if "disconnected" in line["message"]] == ["INFO"]
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")], lines
    assert not [line for line in lines if "stack" in line or "Traceback" in line["message"]], lines
    assert healthz_seconds(served) < 0.5
