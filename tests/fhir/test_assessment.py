"""Clinician assessments exported as FHIR R4: Observations in a Bundle, through Medplum's validator."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fhir.resources.R4B.bundle import Bundle

from cds_service.cdshooks.feedback import Assessment, FeedbackStore, parse_feedback
from cds_service.fhir.assessment import assessment_bundle, outcome_text
from cds_service.settings import Settings
from cds_service.store import IssuedCard, open_store
from tests.fhir.test_us_core import medplum_errors

OVERRIDE_SYSTEM = "https://hipcad.example.org/fhir/CodeSystem/override-reason"


def stored_assessments(tmp_path) -> list[Assessment]:
    """An accepted and a sandbox-style overridden (system and code only, with a comment) assessment of
    one result, through the real store."""
    sql = open_store(Settings(feedback_db=tmp_path / "store.sqlite3")).sql
    sql.put_result("result-1", b"analysis", ttl_s=600)
    link = sql.put_viewer_link("result-1", ttl_s=600)
    sql.record_cards("svc", [IssuedCard("card-1", "warning", link, "DiagnosticReport/dr-1", "ImagingStudy/is-1")])
    store = FeedbackStore(sql)
    body = {
        "feedback": [
            {
                "card": "card-1",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "sugg-1"}],
                "outcomeTimestamp": "2026-11-22T10:05:00Z",
            },
            {
                "card": "card-1",
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {"system": OVERRIDE_SYSTEM, "code": "disagree"},
                    "userComment": "Cortex intact on the lateral view",
                },
                "outcomeTimestamp": "2026-11-22T11:30:00+01:00",
            },
        ]
    }
    assert store.add("svc", parse_feedback(json.dumps(body).encode()).feedback) == 2
    return store.assessments("result-1")


def test_the_export_holds_each_assessment_with_its_reason(tmp_path):
    accepted, overridden = stored_assessments(tmp_path)
    bundle = assessment_bundle([accepted, overridden], now=datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    Bundle.model_validate(bundle)
    assert bundle["type"] == "collection"
    first, second = (entry["resource"] for entry in bundle["entry"])
    assert first["valueCodeableConcept"]["coding"][0]["code"] == "accepted"
    assert first["effectiveDateTime"] == "2026-11-22T10:05:00+00:00"
    assert second["valueCodeableConcept"]["coding"][0]["code"] == "overridden"
    assert second["valueCodeableConcept"]["text"] == "Overridden: Disagree with the AI finding"
    (reason,) = [c for c in second["component"] if c["code"]["coding"][0]["code"] == "override-reason"]
    assert reason["valueCodeableConcept"]["coding"] == [
        {"system": OVERRIDE_SYSTEM, "code": "disagree", "display": "Disagree with the AI finding"}
    ]
    assert second["note"] == [{"text": "Cortex intact on the lateral view"}]
    assert second["effectiveDateTime"] == "2026-11-22T11:30:00+01:00"
    for observation in (first, second):
        assert observation["focus"] == [
            {"reference": "DiagnosticReport/dr-1", "display": "The AI report the card suggested"}
        ]
        assert observation["derivedFrom"] == [{"reference": "ImagingStudy/is-1"}]
        assert "subject" not in observation and "performer" not in observation  # no identity beyond the feedback
    assert [entry["fullUrl"] for entry in bundle["entry"]] == [f"urn:uuid:{first['id']}", f"urn:uuid:{second['id']}"]
    assert assessment_bundle([accepted, overridden])["entry"][0]["resource"]["id"] == first["id"]  # stable ids


def test_medplums_validator_finds_no_error_in_the_export(tmp_path):
    bundle = assessment_bundle(stored_assessments(tmp_path))
    assert medplum_errors(bundle, *(entry["resource"] for entry in bundle["entry"])) == [[], [], []]
    assert medplum_errors(assessment_bundle([])) == [[]]  # a result nobody assessed yet


def test_an_override_without_a_reason_says_so(tmp_path):
    accepted, overridden = stored_assessments(tmp_path)
    bare = Assessment(**{**overridden.__dict__, "reason": None, "reason_display": None, "comment": None})
    assert outcome_text(bare) == "Overridden (no reason given)"
    observation = assessment_bundle([bare])["entry"][0]["resource"]
    assert [c["code"]["coding"][0]["code"] for c in observation["component"]] == ["card-indicator", "card-id"]
    assert outcome_text(accepted) == "Accepted"
