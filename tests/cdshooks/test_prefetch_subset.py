"""Prefetch templates inside the CDS Hooks 2.0 query subset (§ Prefetch Template: reads, type searches on
reference, token and date parameters, ``_count`` and ``_sort``; no ``_include``), and the card still comes
from what a real FHIR server answers to them: the ImagingStudy alone, its Endpoint read by reference."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

import httpx
import pydicom
import pytest

from cds_service.cdshooks.conformance import check_response
from cds_service.cdshooks.discovery import load_services
from cds_service.ehr import imaging_study_bundle
from tests.test_end_to_end import post
from tests.test_real_servers_end_to_end import fhir_request

#: The search parameters the service's templates may use: ImagingStudy's reference (patient) and token
#: (modality) parameters, and the two result parameters the 2.0 subset allows.
ALLOWED = {"patient", "modality", "_count", "_sort"}
PATIENT = f"pat-prefetch-{uuid.uuid4().hex[:8]}"


def test_every_template_stays_inside_the_2_0_query_subset():
    for service in load_services().values():
        for template in (service.prefetch or {}).values():
            parts = urlsplit(template)
            if not parts.query:  # an instance read, e.g. Patient/{{context.patientId}}
                assert parts.path.count("/") == 1
                continue
            names = {name for name, _ in parse_qsl(parts.query)}
            assert names <= ALLOWED, f"{service.id}: {sorted(names - ALLOWED)} outside the 2.0 prefetch subset"


@pytest.fixture
def chart(fhir_server, dicom_store) -> pydicom.Dataset:
    """The patient's ImagingStudy and its DICOMweb Endpoint (the local folder store) on the FHIR server."""
    ds = pydicom.dcmread(next(dicom_store.rglob("*.dcm")), stop_before_pixels=True)
    study, endpoint = (e["resource"] for e in imaging_study_bundle(ds, PATIENT, dicom_store.as_uri())["entry"])
    fhir_server.put({"resourceType": "Patient", "id": PATIENT})
    fhir_server.put(endpoint)
    fhir_server.put(study)
    return ds


def prefetched(fhir_server, template: str) -> dict:
    """What the EHR sends as ``prefetch.studies``: the template run against its FHIR server."""
    query = template.replace("{{context.patientId}}", PATIENT)
    response = httpx.get(f"{fhir_server.base_url}/{query}", headers=fhir_server.headers, timeout=10)
    response.raise_for_status()
    return response.json()


def test_the_card_comes_from_the_prefetched_study_and_the_endpoint_read_by_reference(
    make_service, ehr_keys, fhir_server, chart
):
    template = load_services()["hip-fracture-order-select"].prefetch["studies"]
    bundle = prefetched(fhir_server, template)
    kinds = [entry["resource"]["resourceType"] for entry in bundle.get("entry", [])]
    assert kinds == ["ImagingStudy"]  # no _include: the Endpoint is not in the prefetch
    client = make_service(fhir_allowed_bases=[fhir_server.base_url])
    request = fhir_request(fhir_server, prefetch={"studies": bundle})
    request["context"]["patientId"] = PATIENT
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"]["subject"] = {"reference": f"Patient/{PATIENT}"}
    response = post(client, ehr_keys[0], request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert check_response(body) == []
    (card,) = body["cards"]
    assert "unavailable" not in card["summary"] and "in progress" not in card["summary"]
