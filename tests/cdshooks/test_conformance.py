"""CDS Hooks 2.0 conformance, one test per rule, against the service on the real Triton."""

from __future__ import annotations

import copy
import time
import uuid
from datetime import UTC, datetime

import pytest

from cds_service.cdshooks.conformance import check_response
from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.ehr import load_example
from tests.test_end_to_end import SERVICE_PATH, hook_request, post

ISS = "hipcad-demo-ehr"


def auth(client, private_key: bytes, path: str) -> dict[str, str]:
    token = sign_request_jwt(private_key, ISS, str(client.base_url).rstrip("/") + path)
    return {"Authorization": f"Bearer {token}"}


def test_discovery_lists_every_hook_with_prefetch_templates(service, ehr_keys):
    response = service.get("/cds-services", headers=auth(service, ehr_keys[0], "/cds-services"))
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert {s["hook"] for s in services.values()} == {"order-select", "order-sign", "patient-view"}
    for definition in services.values():
        assert definition["description"] and definition["title"]
        assert "{{context.patientId}}" in definition["prefetch"]["studies"]


def test_discovery_requires_a_jwt(service):
    assert service.get("/cds-services").status_code == 401


def test_finding_card_conforms(service, ehr_keys, dicom_store):
    response = post(service, ehr_keys[0], hook_request(dicom_store))
    assert response.status_code == 200
    assert check_response(response.json()) == []


def test_negative_card_conforms_or_is_absent(make_service, ehr_keys, dicom_store):
    client = make_service(negative_card=False)
    response = post(client, ehr_keys[0], hook_request(dicom_store))
    assert check_response(response.json()) == []
    assert all(card["indicator"] != "info" for card in response.json()["cards"])


def test_problem_card_for_an_unreadable_study_conforms(service, ehr_keys, dicom_store, tmp_path):
    request = hook_request(dicom_store)
    endpoint = request["prefetch"]["studies"]["entry"][1]["resource"]
    endpoint["address"] = (tmp_path / "empty-store").as_uri()  # not allow-listed, not there
    response = post(service, ehr_keys[0], request)
    assert response.status_code == 200
    body = response.json()
    assert check_response(body) == []
    assert body["cards"][0]["indicator"] == "info" and "unavailable" in body["cards"][0]["summary"]


def test_order_sign_is_answered_like_order_select(service, ehr_keys, dicom_store):
    request = hook_request(dicom_store)
    request.update(hook="order-sign", hookInstance=str(uuid.uuid4()))
    del request["context"]["selections"]
    path = "/cds-services/hip-fracture-order-sign"
    response = service.post(path, json=request, headers=auth(service, ehr_keys[0], path))
    assert response.status_code == 200 and len(response.json()["cards"]) == 1
    assert check_response(response.json()) == []


def test_patient_view_starts_the_analysis_and_a_later_hook_is_served_from_cache(service, ehr_keys, dicom_store):
    order = hook_request(dicom_store)
    view = load_example("patient-view.json")
    view["prefetch"] = {"studies": copy.deepcopy(order["prefetch"]["studies"])}
    path = "/cds-services/hip-fracture-patient-view"
    first = service.post(path, json=view, headers=auth(service, ehr_keys[0], path))
    assert first.status_code == 200 and first.json() == {"cards": []}
    deadline = time.monotonic() + 30
    while not service.app.state.pipeline.store.local_keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    again = service.post(path, json=view, headers=auth(service, ehr_keys[0], path))
    assert len(again.json()["cards"]) == 1 and check_response(again.json()) == []


def test_deadline_answers_at_once_and_finishes_in_the_background(make_service, ehr_keys, dicom_store):
    client = make_service(hook_deadline_s=0.001)
    request = hook_request(dicom_store)
    started = time.perf_counter()
    first = post(client, ehr_keys[0], request)
    assert time.perf_counter() - started < 2.0
    body = first.json()
    assert check_response(body) == []
    assert body["cards"][0]["indicator"] == "info" and "in progress" in body["cards"][0]["summary"]
    deadline = time.monotonic() + 30
    while not client.app.state.pipeline.store.local_keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    request["hookInstance"] = str(uuid.uuid4())
    second = post(client, ehr_keys[0], request)
    assert "in progress" not in second.json()["cards"][0]["summary"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"hook": "order-select"}',
        b'{"hook": "order-select", "hookInstance": "x"}',
        b'{"hook": "patient-view", "hookInstance": "x", "context": {}}',  # wrong hook for this service id
    ],
)
def test_bad_requests_get_400_with_an_operation_outcome(service, ehr_keys, body):
    headers = {**auth(service, ehr_keys[0], SERVICE_PATH), "Content-Type": "application/json"}
    response = service.post(SERVICE_PATH, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_oversized_body_is_refused(make_service, ehr_keys, dicom_store):
    client = make_service(max_request_bytes=1000)
    response = post(client, ehr_keys[0], hook_request(dicom_store))
    assert response.status_code == 413  # Content Too Large, with an OperationOutcome


def test_no_prefetch_and_no_fhir_access_is_412(service, ehr_keys):
    request = load_example("order-select.json")
    request.pop("fhirServer")
    response = post(service, ehr_keys[0], request)
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"


def test_failed_prefetch_with_a_fhir_server_not_allow_listed_is_412(service, ehr_keys):
    request = load_example("order-select.json")
    request["prefetch"]["studies"] = {"resourceType": "OperationOutcome", "issue": []}  # the EHR could not prefetch
    response = post(service, ehr_keys[0], request)
    assert response.status_code == 412  # the example's fhirServer is not on the (empty) allow-list


def test_null_prefetch_means_the_ehr_has_no_study_no_card_and_no_search(service, ehr_keys):
    request = load_example("order-select.json")
    request["prefetch"]["studies"] = None  # CDS Hooks 2.0: null = the EHR has no data for the template
    response = post(service, ehr_keys[0], request)
    assert response.status_code == 200 and response.json() == {"cards": []}


def test_cors_preflight(make_service):
    client = make_service(cors_allow_origins=["https://sandbox.cds-hooks.org"])
    response = client.options(
        "/cds-services",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
    assert {"GET", "POST", "OPTIONS"} <= {
        m.strip() for m in response.headers["access-control-allow-methods"].split(",")
    }
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    other = client.options(
        "/cds-services", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers


def feedback_body(card_uuid: str, suggestion_uuid: str) -> dict:
    stamp = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).isoformat()
    return {
        "feedback": [
            {
                "card": card_uuid,
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion_uuid}],
                "outcomeTimestamp": stamp,
            }
        ]
    }


def test_feedback_is_idempotent_and_counted_by_indicator(service, ehr_keys, dicom_store):
    card = post(service, ehr_keys[0], hook_request(dicom_store)).json()["cards"][0]
    path = SERVICE_PATH + "/feedback"
    body = feedback_body(card["uuid"], card["suggestions"][0]["uuid"])
    for _ in range(2):  # the EHR retries
        assert service.post(path, json=body, headers=auth(service, ehr_keys[0], path)).status_code == 200
    rates = service.app.state.feedback.rates()[card["indicator"]]
    assert rates["accepted"] == 1 and rates["issued"] >= 1
    metrics = service.get("/metrics").text
    assert f'hipcad_feedback_cards_accepted_total{{indicator="{card["indicator"]}"}} 1.0' in metrics


def test_override_feedback_with_reason_and_comment(service, ehr_keys, dicom_store):
    card = post(service, ehr_keys[0], hook_request(dicom_store)).json()["cards"][0]
    path = SERVICE_PATH + "/feedback"
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": card["overrideReasons"][0], "userComment": "Radiology read it"},
                "outcomeTimestamp": "2026-11-22T10:05:00Z",
            }
        ]
    }
    assert service.post(path, json=body, headers=auth(service, ehr_keys[0], path)).status_code == 200
    assert service.app.state.feedback.rates()[card["indicator"]]["overridden"] == 1


def test_malformed_feedback_is_400(service, ehr_keys):
    path = SERVICE_PATH + "/feedback"
    bad = {"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-11-22T10:05:00Z"}]}
    assert service.post(path, json=bad, headers=auth(service, ehr_keys[0], path)).status_code == 400


def test_feedback_requires_a_jwt(service):
    assert service.post(SERVICE_PATH + "/feedback", json={"feedback": []}).status_code == 401
