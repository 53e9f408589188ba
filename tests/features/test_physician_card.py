"""Steps for physician_card.feature (real Triton, real folder DICOMweb store, signed JWT)."""

from __future__ import annotations

import base64
import io

from PIL import Image
from pytest_bdd import given, parsers, scenarios, then, when

from cds_service.ehr import load_example
from tests.test_end_to_end import hook_request, post

scenarios("physician_card.feature")


@given("the hip fracture service is running on a real Triton server", target_fixture="client")
def _service(service):
    return service


@given("the patient's latest AP pelvis radiograph is in the image store", target_fixture="store")
def _store(dicom_store):
    return dicom_store


@when("the EHR sends an order-select hook for a hip X-ray with the study prefetched", target_fixture="answer")
def _hip_hook(client, ehr_keys, store):
    return post(client, ehr_keys[0], hook_request(store))


@when("the EHR sends an order-select hook for a chest X-ray", target_fixture="answer")
def _chest_hook(client, ehr_keys):
    return post(client, ehr_keys[0], load_example("order-select-irrelevant.json"))


@then(parsers.parse("the EHR receives exactly one card with a summary under {limit:d} characters"))
def _one_card(answer, limit):
    assert answer.status_code == 200
    cards = answer.json()["cards"]
    assert len(cards) == 1 and len(cards[0]["summary"]) < limit


@then("the card names each hip's side from the image header")
def _sides(answer):
    detail = answer.json()["cards"][0]["detail"]
    assert "| right |" in detail and "| left |" in detail


@then("the card offers to create a preliminary DiagnosticReport with the heat map attached")
def _report(answer):
    action = answer.json()["cards"][0]["suggestions"][0]["actions"][0]
    assert action["type"] == "create"
    report = action["resource"]
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
    (media,) = [r for r in report["contained"] if r["resourceType"] == "Media"]
    assert {"link": {"reference": f"#{media['id']}"}} in [{"link": m["link"]} for m in report["media"]]
    image = base64.b64decode(media["content"]["data"])
    assert Image.open(io.BytesIO(image)).format in {"JPEG", "PNG"}


@then("the card says the models are not for clinical use")
def _disclaimer(answer):
    detail = answer.json()["cards"][0]["detail"].lower()
    assert "not for clinical use" in detail or "untrained model" in detail


@then("the EHR receives no cards")
def _no_cards(answer):
    assert answer.status_code == 200 and answer.json() == {"cards": []}
