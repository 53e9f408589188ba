"""EHR profiles (HIPCAD_EHR_PROFILE=generic|epic|oracle): what discovery, cards and feedback look like.

Unit tests shape a finding card built from plain findings; the service tests run the real app on the real
Triton, one per profile, and check the JSON an EHR of that kind receives.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Literal

import pytest

from cds_service.cdshooks import profiles
from cds_service.cdshooks.cards import finding_card, unavailable_card
from cds_service.cdshooks.conformance import check_card, check_response
from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.cdshooks.models import Link, to_json
from cds_service.ehr import load_example
from cds_service.settings import Settings
from tests.findings_factory import findings
from tests.test_end_to_end import SERVICE_PATH, hook_request

BASE = "http://127.0.0.1:8080"
VIEWER = f"{BASE}/viewer/abc.def"
REPORT = {"resourceType": "DiagnosticReport", "status": "preliminary"}


def settings(profile: str, **changes: object) -> Settings:
    return Settings(host="127.0.0.1", port=8080, ehr_profile=profile, **changes)


def card_for(profile: str, link_type: Literal["smart", "absolute"] = "smart", **changes: object) -> dict:
    card = finding_card(
        findings(), REPORT, BASE, viewer_url=VIEWER, provenance={"resourceType": "Provenance"}, link_type=link_type
    )
    shaped = to_json(profiles.shape_card(card, settings(profile, **changes)))
    assert check_card(shaped) == []
    return shaped


# Cards, per profile (unit) ------------------------------------------------------------------------


def test_generic_cards_are_cds_hooks_2_as_written():
    card = card_for("generic")
    assert card["selectionBehavior"] == "at-most-one"
    assert [a["resource"]["resourceType"] for a in card["suggestions"][0]["actions"]] == [
        "DiagnosticReport",
        "Provenance",
    ]
    assert "topic" not in card["source"]
    (link,) = card["links"]  # HIPCAD_CARD_LINK's default: the SMART launch, the result in appContext
    assert link["type"] == "smart" and link["url"] == f"{BASE}/smart/launch"
    assert json.loads(link["appContext"])["viewerPath"] == "/viewer/abc.def"
    absolute = card_for("generic", link_type="absolute")  # the fallback is kept as it is
    assert absolute["links"] == [{"label": "View heat map", "url": VIEWER, "type": "absolute"}]


def test_epic_cards_select_any_carry_a_topic_and_no_create_epic_cannot_act_on():
    card = card_for("epic")
    assert card["selectionBehavior"] == "any"
    assert card["source"]["topic"] == to_json(profiles.FINDING_TOPIC)
    assert "suggestions" not in card  # Epic creates only Condition, MedicationRequest, ServiceRequest
    (link,) = card["links"]  # the report stays reachable, through the registered SMART launch URL
    assert link["type"] == "smart" and link["url"] == f"{BASE}/smart/launch"
    assert json.loads(link["appContext"])["viewerPath"] == "/viewer/abc.def"
    # Epic keeps only links to registered apps: the absolute fallback still reaches it as the SMART link.
    assert card_for("epic", link_type="absolute")["links"] == card["links"]
    assert card["overrideReasons"]  # overriding still asks for a reason
    status = to_json(profiles.shape_card(unavailable_card("models-unavailable", BASE), settings("epic"), "status"))
    assert status["source"]["topic"] == to_json(profiles.STATUS_TOPIC)  # overriding it never silences findings


def test_epic_selection_behavior_wins_over_the_setting():
    assert card_for("epic", selection_behavior="at-most-one")["selectionBehavior"] == "any"


def test_oracle_links_only_to_the_registered_launch_url():
    card = card_for("oracle")
    (link,) = card["links"]
    assert link["type"] == "smart" and link["url"] == f"{BASE}/smart/launch"
    assert json.loads(link["appContext"])["viewerPath"] == "/viewer/abc.def"
    assert card["suggestions"] and card["selectionBehavior"] == "at-most-one"


def test_oracle_drops_links_that_are_not_registered():
    card = finding_card(findings(), REPORT, BASE, viewer_url=VIEWER)
    card.links = [*card.links, Link(label="Elsewhere", url="https://other.example/page?x=1", type="absolute")]
    registered = ["https://viewer.hospital.example/hipcad"]
    shaped = profiles.shape_card(card, settings("oracle", registered_link_urls=registered))
    assert shaped.links is None  # neither URL registered, and no SMART launch URL to turn the viewer link into
    card.links.append(Link(label="Registered", url=registered[0] + "?study=1", type="absolute"))
    kept = profiles.shape_card(card, settings("oracle", registered_link_urls=registered))
    assert [link.label for link in kept.links] == ["Registered"]


# Feedback audiences, per profile (unit) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("generic", f"{BASE}{SERVICE_PATH}/feedback"),
        ("oracle", f"{BASE}{SERVICE_PATH}/feedback"),
        ("epic", [f"{BASE}{SERVICE_PATH}/feedback", f"{BASE}{SERVICE_PATH}"]),
    ],
)
def test_feedback_audiences(profile, expected):
    assert profiles.audiences(settings(profile), SERVICE_PATH + "/feedback") == expected
    assert profiles.audiences(settings(profile), SERVICE_PATH) == f"{BASE}{SERVICE_PATH}"  # hooks: exact URL


# The service, per profile (real Triton) -----------------------------------------------------------------


def signed(client, private_key: bytes, aud_path: str) -> dict[str, str]:
    token = sign_request_jwt(private_key, "hipcad-demo-ehr", str(client.base_url).rstrip("/") + aud_path)
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("profile", ["generic", "epic", "oracle"])
def test_discovery_announces_the_cds_hooks_and_hook_versions(make_service, ehr_keys, profile):
    client = make_service(ehr_profile=profile)
    body = client.get("/cds-services", headers=signed(client, ehr_keys[0], "/cds-services")).json()
    for service in body["services"]:
        assert service["version"] == "2.0.1" and service["hookVersion"] == "1.0"
        assert "_include" not in service["prefetch"]["studies"]


def feedback(card: dict, outcome: str = "overridden") -> dict:
    entry = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": datetime.now(UTC).isoformat()}
    if outcome == "overridden":
        entry["overrideReason"] = {"reason": {"system": card["overrideReasons"][0]["system"], "code": "disagree"}}
    return {"feedback": [entry]}


def test_epic_order_select_card_and_feedback_signed_for_the_service_url(make_service, ehr_keys, dicom_store):
    client = make_service(ehr_profile="epic")
    response = client.post(
        SERVICE_PATH, json=hook_request(dicom_store), headers=signed(client, ehr_keys[0], SERVICE_PATH)
    )
    assert response.status_code == 200 and check_response(response.json()) == []
    (card,) = response.json()["cards"]
    assert card["selectionBehavior"] == "any" and card["source"]["topic"]["code"] == "hip-fracture-ai-finding"
    assert "suggestions" not in card and card["links"][0]["type"] == "smart"
    path = SERVICE_PATH + "/feedback"
    # Epic signs feedback with aud = the service URL: accepted; the feedback URL is accepted too.
    for aud in (SERVICE_PATH, path):
        answer = client.post(path, json=feedback(card), headers=signed(client, ehr_keys[0], aud))
        assert answer.status_code == 200, answer.text
    other = client.post(path, json=feedback(card), headers=signed(client, ehr_keys[0], "/cds-services/other"))
    assert other.status_code == 401 and other.json()["resourceType"] == "OperationOutcome"
    assert client.app.state.feedback.rates()[card["indicator"]]["overridden"] == 1


def test_generic_feedback_must_be_signed_for_the_feedback_url(make_service, ehr_keys, dicom_store):
    client = make_service()
    response = client.post(
        SERVICE_PATH, json=hook_request(dicom_store), headers=signed(client, ehr_keys[0], SERVICE_PATH)
    )
    (card,) = response.json()["cards"]
    assert card["suggestions"] and "topic" not in card["source"]
    path = SERVICE_PATH + "/feedback"
    refused = client.post(path, json=feedback(card), headers=signed(client, ehr_keys[0], SERVICE_PATH))
    assert refused.status_code == 401
    assert client.post(path, json=feedback(card), headers=signed(client, ehr_keys[0], path)).status_code == 200


def patient_view(dicom_store) -> dict:
    view = load_example("patient-view.json")
    view["hookInstance"] = str(uuid.uuid4())
    view["prefetch"] = {"studies": copy.deepcopy(hook_request(dicom_store)["prefetch"]["studies"])}
    return view


def test_oracle_patient_view_answers_the_finding_card_on_the_first_call(make_service, ehr_keys, dicom_store):
    client = make_service(ehr_profile="oracle", hook_deadline_s=60.0)
    path = "/cds-services/hip-fracture-patient-view"
    response = client.post(path, json=patient_view(dicom_store), headers=signed(client, ehr_keys[0], path))
    assert response.status_code == 200 and check_response(response.json()) == []
    (card,) = response.json()["cards"]  # the first call: the analysis fitted the deadline
    assert card["indicator"] in {"info", "warning", "critical"} and "in progress" not in card["summary"]
    (link,) = card["links"]
    assert link["type"] == "smart" and link["url"] == str(client.base_url).rstrip("/") + "/smart/launch"
    assert json.loads(link["appContext"])["viewerPath"].startswith("/viewer/")


def test_oracle_patient_view_past_the_deadline_answers_nothing_then_the_card(make_service, ehr_keys, dicom_store):
    client = make_service(ehr_profile="oracle", hook_deadline_s=0.001)
    path = "/cds-services/hip-fracture-patient-view"
    view = patient_view(dicom_store)
    first = client.post(path, json=view, headers=signed(client, ehr_keys[0], path))
    assert first.status_code == 200 and first.json() == {"cards": []}  # no "in progress" nag on chart open
    pipeline = client.app.state.pipeline
    deadline = time.monotonic() + 30
    while not pipeline.store.local_keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    view["hookInstance"] = str(uuid.uuid4())
    again = client.post(path, json=view, headers=signed(client, ehr_keys[0], path))
    assert len(again.json()["cards"]) == 1


def test_generic_patient_view_still_starts_in_the_background(make_service, ehr_keys, dicom_store):
    client = make_service()
    path = "/cds-services/hip-fracture-patient-view"
    first = client.post(path, json=patient_view(dicom_store), headers=signed(client, ehr_keys[0], path))
    assert first.json() == {"cards": []}
