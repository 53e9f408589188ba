"""Clinician assessments of an AI result as FHIR R4: one Observation per assessment, in a Bundle.

The EHR-side analogue of the AI result assessment of IHE AI Results (AIR): what the clinician did
with the card that showed the result (CDS Hooks feedback: accepted, or overridden with a reason),
in a form post-market monitoring can read. Shape (http://hl7.org/fhir/R4/observation.html):

* ``status`` final; ``code`` "Clinician assessment of an AI result" from the local code system
  :data:`codes.LOCAL_SYSTEM` (neither LOINC nor SNOMED CT has a code for it).
* ``valueCodeableConcept`` the CDS Hooks outcome, ``accepted`` or ``overridden`` (local codes),
  its text "Overridden: <reason>"; the reason itself in a component, as the EHR sent it (the card's
  display added when the EHR sent only system and code); the clinician's comment in ``note``.
* ``effectiveDateTime`` the feedback's ``outcomeTimestamp``.
* ``focus`` the DiagnosticReport the card suggested (R4 ``derivedFrom`` admits no DiagnosticReport);
  ``derivedFrom`` the analysed ImagingStudy. Both are the references the card was issued with: the
  report exists in the EHR only if the suggestion was accepted.
* Components: the card's indicator and the card's id, so assessments of one card shown more than
  once can be grouped; the Observation's ``identifier`` is the feedback entry's content hash.
* No ``subject`` and no ``performer``: the store keeps no patient identifier in clear, and CDS Hooks
  feedback names no user. The EHR reaches the patient through the referenced report and study.

The Bundle is of type ``collection`` (R4 Bundle: a set of resources with no further meaning), each
entry a ``urn:uuid`` fullUrl equal to the Observation's id, a UUID v5 of the feedback key (stable:
exporting twice gives the same ids).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from cds_service.cdshooks.feedback import Assessment
from cds_service.fhir import codes

#: The Observation's code: the clinician's assessment of an AI result (local: no standard code).
ASSESSMENT = {
    "system": codes.LOCAL_SYSTEM,
    "code": "ai-result-assessment",
    "display": "Clinician assessment of an AI result",
}
#: The CDS Hooks feedback outcomes (§ Feedback ``outcome``), as local codes.
OUTCOMES = {
    "accepted": {"system": codes.LOCAL_SYSTEM, "code": "accepted", "display": "Accepted"},
    "overridden": {"system": codes.LOCAL_SYSTEM, "code": "overridden", "display": "Overridden"},
}
OVERRIDE_REASON = {"system": codes.LOCAL_SYSTEM, "code": "override-reason", "display": "Override reason"}
CARD_INDICATOR = {"system": codes.LOCAL_SYSTEM, "code": "card-indicator", "display": "CDS Hooks card indicator"}
CARD_ID = {"system": codes.LOCAL_SYSTEM, "code": "card-id", "display": "CDS Hooks card id"}
#: The identifier system of an assessment: the feedback entry's content hash (what the store keys it by).
FEEDBACK_IDENTIFIER_SYSTEM = "https://hipcad.example.org/fhir/sid/cds-hooks-feedback"

_NAMESPACE = uuid.UUID("8f6c2b8e-5a0b-4f3e-9d7a-2f1f4c6b9a11")  # any fixed UUID: ids stable across exports


def observation_id(assessment: Assessment) -> str:
    """The Observation's id: a UUID v5 of the feedback entry's key."""
    return str(uuid.uuid5(_NAMESPACE, assessment.key))


def outcome_text(assessment: Assessment) -> str:
    """ "Accepted", or "Overridden: <reason>" (the reason as the card offered it, when one was chosen)."""
    if assessment.outcome == "accepted":
        return "Accepted"
    return f"Overridden: {assessment.reason_display}" if assessment.reason_display else "Overridden (no reason given)"


def instant(value: datetime) -> str:
    """A FHIR dateTime with seconds and an offset (UTC when the value has none)."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat(timespec="seconds")


def assessment_observation(assessment: Assessment) -> dict[str, Any]:
    """One assessment as a FHIR R4 Observation (JSON)."""
    components: list[dict[str, Any]] = []
    if assessment.reason is not None:
        coding = {"system": assessment.reason.system, "code": assessment.reason.code}
        if assessment.reason_display:
            coding["display"] = assessment.reason_display
        components.append(
            {
                "code": {"coding": [OVERRIDE_REASON]},
                "valueCodeableConcept": {
                    "coding": [coding],
                    "text": assessment.reason_display or assessment.reason.code,
                },
            }
        )
    components += [
        {"code": {"coding": [CARD_INDICATOR]}, "valueString": assessment.indicator},
        {"code": {"coding": [CARD_ID]}, "valueString": assessment.card},
    ]
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(assessment),
        "identifier": [{"system": FEEDBACK_IDENTIFIER_SYSTEM, "value": assessment.key}],
        "status": "final",
        "code": {"coding": [ASSESSMENT], "text": "Clinician assessment of the AI hip fracture result"},
        "effectiveDateTime": instant(assessment.timestamp),
        "valueCodeableConcept": {"coding": [OUTCOMES[assessment.outcome]], "text": outcome_text(assessment)},
        "component": components,
    }
    if assessment.report:
        observation["focus"] = [{"reference": assessment.report, "display": "The AI report the card suggested"}]
    if assessment.imaging_study:
        observation["derivedFrom"] = [{"reference": assessment.imaging_study}]
    if assessment.comment:
        observation["note"] = [{"text": assessment.comment}]
    return observation


def assessment_bundle(assessments: Sequence[Assessment], now: datetime | None = None) -> dict[str, Any]:
    """The assessments of one result as a FHIR R4 ``collection`` Bundle (JSON), validated by ``fhir.resources``."""
    entries = []
    for assessment in assessments:
        observation = assessment_observation(assessment)
        entries.append({"fullUrl": f"urn:uuid:{observation['id']}", "resource": observation})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant(now or datetime.now(UTC)),
    }
    if entries:
        bundle["entry"] = entries
    Bundle.model_validate(bundle)
    return bundle
