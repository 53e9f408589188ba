"""Structured logs (issue #10): JSON lines with trace and span ids, and no identifier or token in any line.

The end-to-end part starts the real service with ``cds-service serve`` (stderr captured) and the real
Triton, sends an order-sign hook whose prefetch names a patient, an encounter, an ImagingStudy and its
Study/Series/SOP Instance UIDs, with a fhirAuthorization token and a signed JWT, opens the card's viewer
link, sends a malformed body, a bad JWT and a few hostile URLs, then reads every line the process wrote.
All identifiers are fresh and distinctive, so the leak check cannot pass by accident, and a self-check
shows that the detector does catch an identifier written through the same formatter.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from cds_service.cdshooks.jwt import ensure_keypair, sign_request_jwt
from cds_service.ehr import imaging_study_bundle, load_example
from cds_service.inference.triton_server import free_port
from cds_service.logs import (
    AccessLogFilter,
    JsonFormatter,
    RequestTimer,
    TextFormatter,
    WarningsFilter,
    configure_logging,
    redact_path,
    uvicorn_log_config,
)
from cds_service.telemetry import tracer
from tests.servers.base import ServerProcess

SERVICE = "hip-fracture-order-sign"
REQUIRED_KEYS = {"ts", "level", "logger", "message"}
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HEX32, HEX16 = re.compile(r"[0-9a-f]{32}"), re.compile(r"[0-9a-f]{16}")
ACCESS_PATHS = {
    "/healthz",
    "/cds-services/{id}",
    "/viewer/<redacted>",
    "/viewer/<redacted>/radiograph.png",
    "/viewer/<redacted>/heat.png",
    "/<unmatched>",
}


# The leak detector -----------------------------------------------------------------------------


def leaks(lines: list[str], secrets: dict[str, str]) -> list[tuple[str, str]]:
    """(secret name, line) for every line holding a secret, raw or once JSON-decoded (``\\u`` escapes)."""
    found = []
    for line in lines:
        try:
            decoded = json.dumps(json.loads(line), ensure_ascii=False)
        except ValueError:
            decoded = line
        found += [(name, line) for name, value in secrets.items() if value in line or value in decoded]
    return found


def json_line(logger: str, message: str, *args: object, exc: BaseException | None = None) -> str:
    record = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return JsonFormatter().format(record)


# Unit tests of the formatter and filters -------------------------------------------------------


def test_a_line_has_the_required_keys_and_an_rfc3339_utc_time():
    line = json.loads(json_line("cds_service.x", "hello %s", "world"))
    assert REQUIRED_KEYS <= line.keys()
    assert line["message"] == "hello world" and line["level"] == "WARNING" and line["logger"] == "cds_service.x"
    assert RFC3339_UTC.fullmatch(line["ts"])
    assert "trace_id" not in line  # no current span


def test_a_line_written_inside_a_span_carries_its_trace_and_span_ids(span_exporter):
    with tracer().start_as_current_span("hook") as span:
        line = json.loads(json_line("cds_service.pipeline", "inside"))
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x") and HEX32.fullmatch(line["trace_id"])
    assert line["span_id"] == format(context.span_id, "016x") and HEX16.fullmatch(line["span_id"])


def test_an_exception_is_logged_by_type_and_frames_never_by_message():
    def fail() -> None:
        try:
            raise KeyError("pat-SECRET-in-cause")
        except KeyError as inner:
            raise ValueError("pat-SECRET-in-message") from inner

    try:
        fail()
    except ValueError as exc:
        text = json_line("cds_service.x", "unexpected", exc=exc)
        plain = TextFormatter().format(
            logging.LogRecord("x", logging.ERROR, __file__, 1, "unexpected", None, (type(exc), exc, exc.__traceback__))
        )
    line = json.loads(text)
    assert line["exc_type"] == "ValueError" and line["exc_chain"] == ["KeyError"]
    assert any(frame.endswith(" fail") and "test_logs.py:" in frame for frame in line["stack"])
    assert "pat-SECRET" not in text and "pat-SECRET" not in plain and "ValueError" in plain


def test_arguments_that_do_not_fit_the_template_are_never_printed(capsys):
    text = json_line("cds_service.x", "one %s and %d", "pat-SECRET-arg")
    assert "pat-SECRET" not in text and "unformattable" in json.loads(text)["message"]
    assert "pat-SECRET" not in capsys.readouterr().err  # logging's handleError never ran


def test_extra_fields_other_than_the_access_ones_are_dropped():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.patient = "pat-SECRET-extra"
    record.status = 200
    line = json.loads(JsonFormatter().format(record))
    assert "patient" not in line and line["status"] == 200


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/cds-services", "/cds-services"),
        ("/cds-services/hip-fracture-order-sign", "/cds-services/{id}"),
        ("/cds-services/pat-SECRET?patient=pat-SECRET", "/cds-services/{id}"),
        ("/cds-services/hip-fracture-order-sign/feedback", "/cds-services/{id}/feedback"),
        ("/cds-services/a/b/c", "/cds-services/{id}/<unmatched>"),
        ("/viewer/eyJ0b2tlbi.c2lnbg", "/viewer/<redacted>"),
        ("/viewer/eyJ0b2tlbi.c2lnbg/heat.png?x=1", "/viewer/<redacted>/heat.png"),
        ("/viewer/eyJ0b2tlbi.c2lnbg/radiograph.png", "/viewer/<redacted>/radiograph.png"),
        ("/viewer/static/viewer.js", "/viewer/static/viewer.js"),
        ("/viewer/static/pat-SECRET", "/viewer/<redacted>"),
        ("/viewer?token=eyJ0b2tlbi", "/<unmatched>"),
        ("/healthz?patient=pat-SECRET", "/healthz"),
        ("/readyz", "/readyz"),
        ("/Patient/pat-SECRET", "/<unmatched>"),
    ],
)
def test_paths_are_reduced_to_route_shapes(path, shape):
    assert redact_path(path) == shape


def test_the_access_filter_rewrites_uvicorn_records():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("10.1.2.3:5555", "GET", "/viewer/tok-SECRET/heat.png?t=tok-SECRET", "1.1", 200),
        None,
    )
    assert AccessLogFilter().filter(record) and AccessLogFilter().filter(record)  # idempotent
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "GET /viewer/<redacted>/heat.png 200"
    assert (line["method"], line["path"], line["status"], line["http_version"]) == (
        "GET",
        "/viewer/<redacted>/heat.png",
        200,
        "1.1",
    )
    assert "SECRET" not in json.dumps(line) and "10.1.2.3" not in json.dumps(line)

    odd = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", ("/viewer/tok-SECRET",), None)
    AccessLogFilter().filter(odd)
    assert "SECRET" not in JsonFormatter().format(odd)


def test_captured_warnings_keep_category_and_place_not_text():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("invalid UI value 1.2.3.SECRET", UserWarning, stacklevel=1)
    text = warnings.formatwarning(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    record = logging.LogRecord("py.warnings", logging.WARNING, __file__, 1, "%s", (text,), None)
    WarningsFilter().filter(record)
    message = json.loads(JsonFormatter().format(record))["message"]
    assert "SECRET" not in message and message.startswith("UserWarning at ") and "test_logs.py:" in message


def test_configure_logging_replaces_console_handlers_and_quiets_url_loggers():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("httpx").level)
    console = logging.StreamHandler(io.StringIO())  # what logging.basicConfig installs
    root.addHandler(console)
    buffer = io.StringIO()
    try:
        handler = configure_logging("DEBUG", "json", stream=buffer)
        assert console not in root.handlers and handler in root.handlers
        assert all(h in root.handlers for h in saved[0] if type(h) is not logging.StreamHandler)  # pytest's stay
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        logging.getLogger("cds_service.probe").debug("configured %s", "ok")
    finally:
        logging.captureWarnings(False)
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(saved[2])
    (line,) = [json.loads(text) for text in buffer.getvalue().splitlines()]
    assert line["message"] == "configured ok" and line["logger"] == "cds_service.probe"


def test_the_uvicorn_config_sends_access_lines_through_the_filter():
    config = uvicorn_log_config("INFO", "json")
    assert config["loggers"]["uvicorn.access"]["filters"] == ["access"]
    assert config["handlers"]["access"]["filters"] == ["access"]
    with pytest.raises(ValueError):
        uvicorn_log_config("INFO", "yaml")


async def test_the_request_timer_passes_every_scope_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    for kind in ("http", "lifespan", "websocket"):
        await RequestTimer(app)({"type": kind}, None, None)
    assert seen == ["http", "lifespan", "websocket"]


# End to end: the real service's stderr ---------------------------------------------------------


@dataclass
class Run:
    """What the end-to-end run produced: every line the service wrote and every secret it was given."""

    lines: list[str]
    secrets: dict[str, str]
    statuses: dict[str, int] = field(default_factory=dict)


def distinctive_study(folder: Path, ids: dict[str, str]) -> pydicom.Dataset:
    """The demo's phantom with fresh, distinctive identifiers, written into a folder store."""
    phantoms = pytest.importorskip("cds_service.training.phantoms")
    source = phantoms.write_sample_study(folder.parent / "phantom", seed=7)
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = ids["study_uid"], ids["series_uid"], ids["sop_uid"]
    ds.file_meta.MediaStorageSOPInstanceUID = ids["sop_uid"]
    ds.PatientID, ds.PatientName, ds.AccessionNumber = ids["patient_id"], ids["dicom_name"], ids["accession"]
    folder.mkdir(parents=True)
    ds.save_as(folder / "image.dcm", enforce_file_format=True)
    return pydicom.dcmread(folder / "image.dcm", stop_before_pixels=True)


def order_sign_request(ds: pydicom.Dataset, ids: dict[str, str], dicomweb: str) -> dict[str, Any]:
    text = json.dumps(load_example("order-sign.json"))
    request = json.loads(text.replace("pat-hip-1", ids["patient_id"]).replace("enc-ed-1", ids["encounter_id"]))
    request["hookInstance"] = str(uuid.uuid4())
    request["fhirAuthorization"] = {
        "access_token": ids["access_token"],
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/ImagingStudy.read patient/Endpoint.read",
        "subject": "hipcad-cds-service",
    }
    request["prefetch"]["patient"]["name"] = [{"family": ids["family"], "given": [ids["given"]]}]
    studies = imaging_study_bundle(ds, ids["patient_id"], dicomweb)
    studies["entry"][0]["resource"]["id"] = ids["imaging_study_id"]
    request["prefetch"]["studies"] = studies
    return request


def jwt_parts(token: str) -> dict[str, str]:
    _header, payload, signature = token.split(".")
    return {"jwt": token, "jwt payload": payload, "jwt signature": signature}


def service_command() -> list[str]:
    script = Path(sys.executable).with_name("cds-service")
    return [str(script), "serve"] if script.exists() else [sys.executable, "-m", "cds_service.cli", "serve"]


@pytest.fixture(scope="module")
def run(triton, ehr_keys, tmp_path_factory) -> Run:
    """One session with the real service; returns its log lines and the secrets it must not have logged."""
    tag = uuid.uuid4().hex[:10]
    ids = {
        "patient_id": f"pat-LEAKCHK-{tag}",
        "encounter_id": f"enc-LEAKCHK-{tag}",
        "imaging_study_id": f"imgstudy-LEAKCHK-{tag}",
        "study_uid": generate_uid(),
        "series_uid": generate_uid(),
        "sop_uid": generate_uid(),
        "access_token": f"fhir-at-LEAKCHK-{uuid.uuid4().hex}",
        "family": f"Quuxworth{tag[:4]}",
        "given": f"Zebedee{tag[4:8]}",
        "dicom_name": f"Dicomname{tag[:5]}^Phantasma",
        "accession": f"ACCLK{tag[:8]}",
    }
    root = tmp_path_factory.mktemp("logs")
    ds = distinctive_study(root / "dicom", ids)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/cds-services/{SERVICE}"
    env = {
        **os.environ,
        "HIPCAD_HOST": "127.0.0.1",
        "HIPCAD_PORT": str(port),
        "HIPCAD_PUBLIC_BASE_URL": "",
        "HIPCAD_TRITON_URL": triton.grpc_url,
        "HIPCAD_JWT_PUBLIC_KEY_FILE": str(ehr_keys[1]),
        "HIPCAD_DICOM_FOLDER": str(root / "dicom"),
        "HIPCAD_FEEDBACK_DB": str(root / "feedback.sqlite3"),
        "HIPCAD_OUTPUT_FOLDER": str(root / "out"),
        "HIPCAD_HOOK_DEADLINE_S": "120",
        "HIPCAD_OTLP_ENDPOINT": "",
        "HIPCAD_OTEL_CONSOLE": "false",
        "HIPCAD_LOG_FORMAT": "json",
        "HIPCAD_LOG_LEVEL": "INFO",
        "HIPCAD_CARD_LINK": "absolute",  # the test opens the signed viewer link and checks its token is redacted
    }
    server = ServerProcess("cds-service", service_command(), root / "service.log", env=env)
    server.start(lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200, timeout_s=90)
    secrets = {name: value for name, value in ids.items()}
    statuses: dict[str, int] = {}

    def bearer(key: bytes, path: str = f"/cds-services/{SERVICE}") -> dict[str, str]:
        token = sign_request_jwt(key, "hipcad-demo-ehr", base + path)
        secrets.update({f"{name} #{len(secrets)}": value for name, value in jwt_parts(token).items()})
        return {"Authorization": f"Bearer {token}"}

    try:
        with httpx.Client(timeout=180) as client:
            request = order_sign_request(ds, ids, (root / "dicom").as_uri())
            hook = client.post(url, json=request, headers=bearer(ehr_keys[0]))
            statuses["hook"] = hook.status_code
            assert hook.status_code == 200, hook.text
            (card,) = hook.json()["cards"]
            assert "unavailable" not in card["summary"], card
            link = card["links"][0]["url"]
            token = link.rsplit("/viewer/", 1)[1]
            secrets.update(
                {"viewer token": token, **{f"viewer token part {i}": p for i, p in enumerate(token.split("."))}}
            )
            views = {
                "viewer": "",
                "viewer radiograph": "/radiograph.png",
                "viewer heat": "/heat.png",
                "viewer with query": f"?t={token}&patient={ids['patient_id']}",
            }
            for name, suffix in views.items():
                statuses[name] = client.get(link + suffix).status_code
            assert statuses["viewer"] == 200

            malformed = f'{{"hook": "order-sign", "context": {{"patientId": "{ids["patient_id"]}", '.encode()
            statuses["malformed"] = client.post(
                url, content=malformed, headers={**bearer(ehr_keys[0]), "Content-Type": "application/json"}
            ).status_code

            other = tmp_path_factory.mktemp("other-ehr")
            ensure_keypair(other / "private.pem", other / "public.pem")
            statuses["bad jwt"] = client.post(
                url,
                json=order_sign_request(ds, ids, (root / "dicom").as_uri()),
                headers=bearer((other / "private.pem").read_bytes()),
            ).status_code

            # A study whose image store is off the allow-list: a warning from inside the hook span.
            off_list = order_sign_request(ds, ids, f"https://pacs.example/dicom-web/{ids['patient_id']}")
            secrets["off-list address"] = f"pacs.example/dicom-web/{ids['patient_id']}"
            statuses["off-list store"] = client.post(url, json=off_list, headers=bearer(ehr_keys[0])).status_code

            # Hostile URLs: identifiers and tokens in paths and query strings.
            statuses["id in path"] = client.post(
                f"{base}/cds-services/{ids['patient_id']}?patient={ids['patient_id']}",
                json=request,
                headers={"Authorization": f"Bearer {ids['access_token']}"},
            ).status_code
            statuses["forged viewer"] = client.get(f"{base}/viewer/{ids['study_uid']}.{ids['sop_uid']}").status_code
            statuses["query"] = client.get(f"{base}/healthz?patient={ids['patient_id']}&t={token}").status_code
            statuses["unknown"] = client.get(f"{base}/Patient/{ids['patient_id']}").status_code
    finally:
        if server.process is not None and server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGTERM)  # a graceful stop: its shutdown lines are checked too
            try:
                server.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        server.stop()
    lines = [line for line in server.log.read_text(errors="replace").splitlines() if line.strip()]
    return Run(lines, secrets, statuses)


def test_the_scenario_answered_as_expected(run):
    assert run.statuses == {
        "hook": 200,
        "viewer": 200,
        "viewer radiograph": 200,
        "viewer heat": 200,
        "viewer with query": 200,
        "malformed": 400,
        "bad jwt": 401,
        "off-list store": 200,
        "id in path": 401,
        "forged viewer": 403,
        "query": 200,
        "unknown": 404,
    }


def test_every_line_is_one_json_object_with_the_required_keys(run):
    assert len(run.lines) >= 10
    for line in run.lines:
        parsed = json.loads(line)
        assert isinstance(parsed, dict) and REQUIRED_KEYS <= parsed.keys(), line
        assert RFC3339_UTC.fullmatch(parsed["ts"]), line
        assert parsed["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        for key in ("trace_id", "span_id"):
            if key in parsed:
                assert (HEX32 if key == "trace_id" else HEX16).fullmatch(parsed[key]), line


def test_lines_written_inside_a_span_carry_trace_and_span_ids(run):
    parsed = [json.loads(line) for line in run.lines]
    in_hook = [line for line in parsed if line["logger"] == "cds_service.pipeline"]
    assert any("allow-list" in line["message"] for line in in_hook), "the off-list store warning is missing"
    for line in in_hook:
        assert HEX32.fullmatch(line.get("trace_id", "")) and HEX16.fullmatch(line.get("span_id", "")), line
        assert line["trace_id"] != "0" * 32


def test_access_lines_hold_method_route_shape_status_and_duration_only(run):
    access = [json.loads(line) for line in run.lines if json.loads(line)["logger"] == "uvicorn.access"]
    assert len(access) >= len(run.statuses)
    for line in access:
        assert line["path"] in ACCESS_PATHS, line
        assert line["message"] == f"{line['method']} {line['path']} {line['status']}", line
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0, line
        assert "?" not in line["message"] and "127.0.0.1" not in json.dumps(line), line
    seen = {(line["method"], line["path"], line["status"]) for line in access}
    assert {
        ("POST", "/cds-services/{id}", 200),
        ("POST", "/cds-services/{id}", 400),
        ("POST", "/cds-services/{id}", 401),
        ("GET", "/viewer/<redacted>", 200),
        ("GET", "/viewer/<redacted>/heat.png", 200),
        ("GET", "/viewer/<redacted>", 403),
        ("GET", "/<unmatched>", 404),
    } <= seen


def test_no_line_holds_an_identifier_a_token_or_a_name(run):
    assert len(run.secrets) >= 20  # ids, names, UIDs, the access token, every JWT and the viewer token
    found = leaks(run.lines, run.secrets)
    assert not found, "\n".join(f"{name}: {line}" for name, line in found)


def test_the_detector_would_catch_a_leak(run):
    """Self-check: the same secrets, written through the same formatter, are flagged."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    probe = logging.getLogger("tests.test_logs.probe")
    probe.addHandler(handler)
    probe.propagate = False
    try:
        for name, value in run.secrets.items():
            probe.warning("leaked %s: %s", name, value)
    finally:
        probe.removeHandler(handler)
    written = buffer.getvalue().splitlines()
    assert len(written) == len(run.secrets)
    flagged = {name for name, _ in leaks(written, run.secrets)}
    assert flagged == set(run.secrets)
