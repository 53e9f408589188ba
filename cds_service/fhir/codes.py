"""Code systems and codes we emit in FHIR resources.

Where no standard code exists (the AI's per-hip fracture probability, the Garden stage) we use a
local CodeSystem under :data:`LOCAL_SYSTEM`; the README says so.
"""

from __future__ import annotations

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
LOCAL_SYSTEM = "https://hipcad.example.org/fhir/CodeSystem/hipcad"

#: LOINC 18748-4 "Diagnostic imaging study" (document type of an imaging report).
REPORT_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
#: HL7 v2 table 0074 "RAD" (Radiology) — DiagnosticReport.category.
RADIOLOGY = {"system": V2_0074, "code": "RAD", "display": "Radiology"}
#: observation-category "imaging".
IMAGING = {"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}
#: v3 ObservationValue "AIAST" (artificial intelligence asserted): marks AI-generated content.
AI_ASSERTED = {"system": V3_OBSERVATION_VALUE, "code": "AIAST", "display": "Artificial Intelligence asserted"}
#: SNOMED CT 24136001 "Hip joint structure" (body site; laterality is given in the text).
HIP_JOINT = {"system": SNOMED, "code": "24136001", "display": "Hip joint structure"}

FRACTURE_FINDING = {"system": LOCAL_SYSTEM, "code": "hip-fracture-ai", "display": "Hip fracture (AI assessment)"}
FRACTURE_PRESENT = {"system": LOCAL_SYSTEM, "code": "fracture-present", "display": "Fracture suspected"}
FRACTURE_ABSENT = {"system": LOCAL_SYSTEM, "code": "fracture-absent", "display": "No fracture suspected"}
FRACTURE_PROBABILITY = {"system": LOCAL_SYSTEM, "code": "fracture-probability", "display": "Fracture probability"}
GARDEN_STAGE = {"system": LOCAL_SYSTEM, "code": "garden-stage", "display": "Garden stage (AI assessment)"}
DISPLACED_PROBABILITY = {
    "system": LOCAL_SYSTEM,
    "code": "displaced-probability",
    "display": "Probability of displaced femoral-neck fracture (Garden III–IV)",
}


def garden_coding(stage: str) -> dict[str, str]:
    """Local code for a Garden stage (I–IV)."""
    return {"system": LOCAL_SYSTEM, "code": f"garden-{stage}", "display": f"Garden {stage}"}
