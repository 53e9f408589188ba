"""One order-select hook end to end: real Triton, folder DICOMweb store, signed JWT, prefetch."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pydicom
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from PIL import Image

from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.dicom.preprocess import DISPLAY_MAX_EDGE
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.pipeline import STAGES

SERVICE_PATH = "/cds-services/hip-fracture-order-select"


def hook_request(dicom_store: Path) -> dict:
    path = next(dicom_store.rglob("*.dcm"))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    template = load_example("order-select.json")
    return with_studies(template, imaging_study_bundle(ds, template["context"]["patientId"], dicom_store.as_uri()))


def post(service, private_key: bytes, request: dict):
    token = sign_request_jwt(private_key, "hipcad-demo-ehr", str(service.base_url).rstrip("/") + SERVICE_PATH)
    return service.post(SERVICE_PATH, json=request, headers={"Authorization": f"Bearer {token}"})


def test_order_select_hook_answers_with_a_heat_map_card(service, ehr_keys, dicom_store, spans):
    response = post(service, ehr_keys[0], hook_request(dicom_store))
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert len(cards) == 1
    card = cards[0]
    assert len(card["summary"]) < 140
    assert card["indicator"] in {"info", "warning", "critical"}
    assert card["source"]["label"]
    assert card["selectionBehavior"] == "at-most-one"

    action = card["suggestions"][0]["actions"][0]
    assert action["type"] == "create"
    report = DiagnosticReport.model_validate(action["resource"])
    assert report.status == "preliminary"
    assert report.subject.reference == "Patient/pat-hip-1"
    # basedOn is the analysed study's own order (the demo's study has none), never the draft order
    # being placed: a report must not attach to, or close, an order not yet performed.
    assert report.basedOn is None

    sides = {obs.bodySite.text for obs in report.contained if obs.get_resource_type() == "Observation"}
    assert sides == {"Right hip", "Left hip"}  # laterality from PatientOrientation, never guessed

    (media,) = [r for r in action["resource"]["contained"] if r["resourceType"] == "Media"]
    # The readable report (US Core must-support): text, not a second copy of the heat map.
    assert [form["contentType"] for form in action["resource"]["presentedForm"]] == ["text/html"]
    image = Image.open(io.BytesIO(base64.b64decode(media["content"]["data"])))
    assert image.format == "JPEG" and image.mode == "RGB"
    ds = pydicom.dcmread(next(dicom_store.rglob("*.dcm")), stop_before_pixels=True)
    scale = min(1.0, DISPLAY_MAX_EDGE / max(ds.Rows, ds.Columns))
    assert image.size == (round(ds.Columns * scale), round(ds.Rows * scale))

    finished = spans.get_finished_spans()
    hook = next(span for span in finished if span.name == "hook")
    children = {span.name for span in finished if span.parent and span.parent.span_id == hook.context.span_id}
    assert children >= set(STAGES)
    for span in finished:  # no patient data in trace attributes
        assert "pat-hip-1" not in str(dict(span.attributes or {}))


def test_second_hook_for_the_same_study_is_answered_from_cache(service, ehr_keys, dicom_store, spans):
    request = hook_request(dicom_store)
    assert post(service, ehr_keys[0], request).status_code == 200
    spans.clear()
    again = post(service, ehr_keys[0], request)
    assert again.status_code == 200 and again.json()["cards"]
    names = {span.name for span in spans.get_finished_spans()}
    assert "cache_hit" in names and "infer" not in names


def test_irrelevant_order_gets_no_cards(service, ehr_keys):
    response = post(service, ehr_keys[0], load_example("order-select-irrelevant.json"))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_missing_jwt_is_a_401_that_says_nothing_about_why(service, dicom_store):
    response = service.post(SERVICE_PATH, json=hook_request(dicom_store))
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    (issue,) = response.json()["issue"]  # an OperationOutcome (CDS Hooks 3.0 ballot), the reason only in the log
    assert issue["code"] == "login" and "bearer" not in issue["diagnostics"].lower()


def test_malformed_json_is_a_400_operation_outcome(service, ehr_keys):
    token = sign_request_jwt(ehr_keys[0], "hipcad-demo-ehr", str(service.base_url).rstrip("/") + SERVICE_PATH)
    response = service.post(
        SERVICE_PATH,
        content=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
