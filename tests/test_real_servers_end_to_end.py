"""End to end on real servers, nothing prefetched: the service searches the FHIR server with the EHR's
token, follows ImagingStudy.endpoint to the Endpoint, retrieves the instance from Orthanc over DICOMweb
with its own PACS credentials, runs Triton, and the card's create action POSTs to the FHIR server."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pydicom
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from cds_service.cdshooks.conformance import check_response
from cds_service.ehr import imaging_study_bundle, load_example
from cds_service.training.phantoms import write_sample_study
from tests.test_end_to_end import post

PATIENT = "pat-hip-1"


@pytest.fixture(scope="module")
def chart(orthanc_server, fhir_server, tmp_path_factory) -> pydicom.Dataset:
    """The patient's chart: Patient, Endpoint and ImagingStudy on the FHIR server; pixels in Orthanc."""
    path = write_sample_study(tmp_path_factory.mktemp("pacs"), seed=7)
    orthanc_server.upload(path.read_bytes())
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    fhir_server.put({"resourceType": "Patient", "id": PATIENT, "gender": "female"})
    study, endpoint = (e["resource"] for e in imaging_study_bundle(ds, PATIENT, orthanc_server.dicomweb_url)["entry"])
    fhir_server.put(endpoint)
    fhir_server.put(study)
    return ds


def fhir_request(fhir_server, **changes) -> dict:
    request = load_example("order-select.json")
    request.pop("prefetch")
    request.update(
        hookInstance=str(uuid.uuid4()),
        fhirServer=fhir_server.base_url,
        fhirAuthorization={
            "access_token": fhir_server.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/ImagingStudy.read patient/Endpoint.read",
            "subject": "hipcad-cds-service",
        },
        **changes,
    )
    return request


@pytest.fixture
def real_service(make_service, orthanc_server, fhir_server):
    return make_service(
        fhir_allowed_bases=[fhir_server.base_url],
        dicomweb_allowed_bases=[orthanc_server.dicomweb_url],
        dicomweb_credentials={
            orthanc_server.dicomweb_url: {"username": orthanc_server.user, "password": orthanc_server.password}
        },
    )


def test_hook_without_prefetch_searches_fhir_and_retrieves_from_orthanc(real_service, ehr_keys, fhir_server, chart):
    response = post(real_service, ehr_keys[0], fhir_request(fhir_server))
    assert response.status_code == 200, response.text
    body = response.json()
    assert check_response(body) == [] and len(body["cards"]) == 1
    card = body["cards"][0]
    assert "unavailable" not in card["summary"]
    report = card["suggestions"][0]["actions"][0]["resource"]
    assert report["imagingStudy"][0]["reference"].startswith("ImagingStudy/")

    # The suggestion's create action is directly POSTable: the FHIR server stores it and reads it back.
    created = fhir_server.post(report)
    assert created.status_code == 201, created.text
    stored = fhir_server.get(f"DiagnosticReport/{created.json()['id']}")
    parsed = DiagnosticReport.model_validate(stored)
    assert parsed.status == "preliminary"
    assert {r.get_resource_type() for r in parsed.contained} == {"Device", "Observation", "Media"}
    media = [next(c for c in r["contained"] if c["resourceType"] == "Media") for r in (stored, report)]
    assert media[0]["content"]["data"] == media[1]["content"]["data"]  # the heat map survives the round trip


def test_a_wrong_fhir_token_is_a_412(real_service, ehr_keys, fhir_server, chart):
    request = fhir_request(fhir_server)
    request["fhirAuthorization"]["access_token"] = "not-the-token"
    response = post(real_service, ehr_keys[0], request)
    assert response.status_code == 412
    assert "401" in response.json()["issue"][0]["diagnostics"]


def test_a_fhir_server_off_the_allow_list_is_never_contacted(make_service, ehr_keys, fhir_server, chart):
    client = make_service(fhir_allowed_bases=["https://ehr.example/fhir"])
    response = post(client, ehr_keys[0], fhir_request(fhir_server))
    assert response.status_code == 412 and "allow-list" in response.json()["issue"][0]["diagnostics"]


class BlackholeServer:
    """A TCP port that accepts connections and never answers: a PACS that hangs (not a DICOMweb fake)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/dicom-web"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        self.sock.close()


@pytest.fixture
def hanging_pacs() -> Iterator[BlackholeServer]:
    server = BlackholeServer()
    yield server
    server.close()


def test_a_hanging_pacs_gets_an_honest_card_within_the_deadline(make_service, ehr_keys, dicom_store, hanging_pacs):
    from tests.test_end_to_end import hook_request

    client = make_service(dicomweb_allowed_bases=[hanging_pacs.url], dicomweb_timeout_s=1.0, hook_deadline_s=3.0)
    request = hook_request(dicom_store)
    request["prefetch"]["studies"]["entry"][1]["resource"]["address"] = hanging_pacs.url
    started = time.perf_counter()
    response = post(client, ehr_keys[0], request)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and elapsed < 3.5
    card = response.json()["cards"][0]
    assert card["indicator"] == "info" and check_response(response.json()) == []
    assert "unavailable" in card["summary"] and "`images-unavailable`" in card["detail"]  # the reason: logged only


def test_a_paginated_prefetch_is_followed_to_the_next_page(real_service, ehr_keys, fhir_server, chart):
    request = fhir_request(fhir_server)
    request["prefetch"] = {
        "studies": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": f"{fhir_server.base_url}/ImagingStudy?patient=Patient/{PATIENT}"}],
        }
    }
    response = post(real_service, ehr_keys[0], request)
    assert response.status_code == 200
    card = response.json()["cards"][0]
    assert "unavailable" not in card["summary"] and card["indicator"] in {"warning", "critical"}
