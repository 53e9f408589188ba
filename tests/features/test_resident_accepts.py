"""Steps for resident_accepts.feature (real Triton, real FHIR server, viewer, feedback)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from pytest_bdd import given, scenarios, then, when

from tests.cdshooks.test_conformance import auth, feedback_body
from tests.test_end_to_end import hook_request, post

scenarios("resident_accepts.feature")


@pytest.fixture
def service(make_service) -> TestClient:
    """The service with the absolute fallback link (HIPCAD_CARD_LINK=absolute): the resident opens the
    card's link right here, with no EHR to launch a SMART app from."""
    return make_service(card_link="absolute")


@given("the patient's AP pelvis shows a displaced right femoral-neck fracture", target_fixture="store")
def _store(dicom_store):
    return dicom_store  # the demo's sample study: a right Garden III phantom


@when("the resident selects a hip X-ray order", target_fixture="card")
def _select(service, ehr_keys, store):
    response = post(service, ehr_keys[0], hook_request(store))
    assert response.status_code == 200
    return response.json()["cards"][0]


@then("a critical card names a suspected displaced right femoral-neck fracture, its Garden group and its probability")
def _critical(card):
    """The site-aware model names the femoral neck; a displaced neck fracture above the high-specificity
    point, from calibrated models, is the one critical card."""
    assert card["indicator"] == "critical"
    assert "suspected displaced right femoral neck fracture (Garden III–IV)" in card["summary"]
    assert re.search(r"p (≈|>) \d+ %", card["summary"])


@when("the resident opens the card's heat-map link", target_fixture="page")
def _open(service, card):
    link = next(link for link in card["links"] if link["type"] == "absolute")
    path = link["url"].removeprefix(str(service.base_url).rstrip("/"))
    return service, path, service.get(path)


@then("the viewer shows the radiograph, the heat map and the disclaimer")
def _viewer(page):
    client, path, response = page
    assert response.status_code == 200
    assert "not for clinical use" in response.text.lower()
    for image in ("radiograph.png", "heat.png"):
        got = client.get(f"{path}/{image}")
        assert got.status_code == 200 and got.content[:4] == b"\x89PNG"


@when("the resident accepts the suggestion", target_fixture="accepted")
def _accept(service, ehr_keys, card, fhir_server):
    report = card["suggestions"][0]["actions"][0]["resource"]
    created = fhir_server.post(report)  # what the EHR does with a create action
    path = "/cds-services/hip-fracture-order-select/feedback"
    body = feedback_body(card["uuid"], card["suggestions"][0]["uuid"])
    feedback = service.post(path, json=body, headers=auth(service, ehr_keys[0], path))
    return created, feedback


@then("the EHR stores the preliminary DiagnosticReport on its FHIR server")
def _stored(accepted, fhir_server):
    created, _ = accepted
    assert created.status_code == 201
    stored = fhir_server.get(f"DiagnosticReport/{created.json()['id']}")
    assert stored["status"] == "preliminary"
    # The conclusion codes a suspicion (SNOMED CT situation with explicit context: suspected 415684004
    # closed fracture of neck of femur 359820003), not a confirmed disorder.
    code = stored["conclusionCode"][0]["coding"][0]["code"]
    assert "359820003" in code and "415684004" in code


@then("the service counts the card as accepted")
def _counted(accepted, service, card):
    assert accepted[1].status_code == 200
    assert card["indicator"] == "critical"  # counted under the card's own indicator
    assert 'hipcad_feedback_cards_accepted_total{indicator="critical"} 1.0' in service.get("/metrics").text
