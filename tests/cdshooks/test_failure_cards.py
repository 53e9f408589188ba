"""Failure cards through the app: Triton, the FHIR server or the PACS down; the clinician reads a reason
code and what to do, never a host, a port or exception text; the full reason is in the log."""

from __future__ import annotations

import json
import logging
import socket

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.cdshooks.conformance import check_response
from tests.test_end_to_end import hook_request, post
from tests.test_faults import searching_request


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_no_internals(text: str, port: int) -> None:
    for leaked in ("127.0.0.1", str(port), "localhost", "Error", "UNAVAILABLE", "refused", "Triton", "http"):
        assert leaked not in text, leaked


def failure_card(response, port: int) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert check_response(body) == []
    (card,) = body["cards"]
    assert card["indicator"] == "info" and "unavailable" in card["summary"]
    assert_no_internals(json.dumps({key: card[key] for key in ("summary", "detail")}), port)
    return card


def test_triton_down_card_names_a_reason_code_and_the_log_the_reason(
    service_settings, ehr_keys, dicom_store, caplog: pytest.LogCaptureFixture
):
    port = closed_port()
    settings = service_settings.model_copy(update={"triton_url": f"127.0.0.1:{port}", "triton_timeout_s": 1.0})
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings), base_url=settings.base_url()) as client:
        card = failure_card(post(client, ehr_keys[0], hook_request(dicom_store)), port)
    assert "`models-unavailable`" in card["detail"] and "Review the images yourself" in card["detail"]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"127.0.0.1:{port}" in logged and "UNAVAILABLE" in logged  # the full reason, for the operator


def test_fhir_down_is_a_412_without_internal_addresses(service_settings, ehr_keys):
    """The FHIR server unreachable: CDS Hooks 2.0 answers 412 (no card); its text names no host or port."""
    port = closed_port()
    base = f"http://127.0.0.1:{port}/fhir"
    settings = service_settings.model_copy(update={"fhir_allowed_bases": [base], "fhir_timeout_s": 1.0})
    with TestClient(create_app(settings), base_url=settings.base_url()) as client:
        response = post(client, ehr_keys[0], searching_request(base))
    assert response.status_code == 412 and "cards" not in response.json()
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "FHIR server" in diagnostics and "127.0.0.1" not in diagnostics and str(port) not in diagnostics


@pytest.mark.triton
def test_pacs_down_card_names_a_reason_code(make_service, ehr_keys, dicom_store):
    port = closed_port()
    base = f"http://127.0.0.1:{port}/dicom-web"
    client = make_service(dicomweb_allowed_bases=[base], dicomweb_timeout_s=1.0, hook_deadline_s=5.0)
    request = hook_request(dicom_store)
    request["prefetch"]["studies"]["entry"][1]["resource"]["address"] = base
    card = failure_card(post(client, ehr_keys[0], request), port)
    assert "`images-unavailable`" in card["detail"] and "image archive" in card["detail"]
