"""Steps for sandbox_registration.feature and feedback_twice.feature."""

from __future__ import annotations

from pytest_bdd import given, scenarios, then, when

from cds_service.cdshooks.conformance import check_response
from tests.cdshooks.test_conformance import auth, feedback_body
from tests.test_end_to_end import hook_request, post

scenarios("sandbox_registration.feature", "feedback_twice.feature")

ORIGIN = "https://sandbox.cds-hooks.org"


@given("the service runs with the sandbox origin allowed by CORS", target_fixture="client")
def _client(make_service):
    return make_service(cors_allow_origins=[ORIGIN])


@when("the browser sends a CORS preflight for the discovery endpoint", target_fixture="answer")
def _preflight(client):
    return client.options(
        "/cds-services",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


@then("the preflight allows GET, POST and the Authorization header from that origin")
def _preflight_ok(answer):
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    methods = answer.headers["access-control-allow-methods"]
    assert "GET" in methods and "POST" in methods
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()


@when("the client calls discovery with a signed JWT", target_fixture="answer")
def _discovery(client, ehr_keys):
    return client.get("/cds-services", headers={**auth(client, ehr_keys[0], "/cds-services"), "Origin": ORIGIN})


@then("it lists the order-select, order-sign and patient-view services")
def _listed(answer):
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert {s["hook"] for s in answer.json()["services"]} == {"order-select", "order-sign", "patient-view"}


@when("the client sends the order-select hook with the ImagingStudy prefetched", target_fixture="answer")
def _hook(client, ehr_keys, dicom_store):
    return post(client, ehr_keys[0], hook_request(dicom_store))


@then("a conformant card comes back")
def _card(answer):
    assert answer.status_code == 200
    assert len(answer.json()["cards"]) == 1 and check_response(answer.json()) == []


@given("a physician received a hip fracture card", target_fixture="card")
def _received(service, ehr_keys, dicom_store):
    return post(service, ehr_keys[0], hook_request(dicom_store)).json()["cards"][0]


@when("the EHR reports twice that the physician accepted the suggestion", target_fixture="answers")
def _twice(service, ehr_keys, card):
    path = "/cds-services/hip-fracture-order-select/feedback"
    body = feedback_body(card["uuid"], card["suggestions"][0]["uuid"])
    return [service.post(path, json=body, headers=auth(service, ehr_keys[0], path)) for _ in range(2)]


@then("the service answers both with 200")
def _both_ok(answers):
    assert [a.status_code for a in answers] == [200, 200]


@then("the card is counted once as accepted in the metrics")
def _counted_once(service, card):
    assert (
        f'hipcad_feedback_cards_accepted_total{{indicator="{card["indicator"]}"}} 1.0' in service.get("/metrics").text
    )
