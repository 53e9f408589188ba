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

DCM = "http://dicom.nema.org/resources/ontology/DCM"
MEDIA_TYPE = "http://terminology.hl7.org/CodeSystem/media-type"
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
#: RFC 3986 URIs as codes: ImagingStudy.series.instance.sopClass is ``urn:oid:`` + the SOP Class UID.
URI = "urn:ietf:rfc:3986"

#: LOINC 30768-6 "XR Pelvis and Hip - bilateral Views" (RSNA/LOINC radiology playbook), for the
#: bilateral AP pelvis; LOINC 30767-8 "XR Pelvis and Hip Views" for a single-hip view.
REPORT_CODE_BILATERAL = {"system": LOINC, "code": "30768-6", "display": "XR Pelvis and Hip - bilateral Views"}
REPORT_CODE_UNILATERAL = {"system": LOINC, "code": "30767-8", "display": "XR Pelvis and Hip Views"}
#: SNOMED CT 359817006 "Closed fracture of hip (disorder)" — DiagnosticReport.conclusionCode when a
#: fracture is suspected (member of the VSAC "Lower Body Fracture" value set
#: 2.16.840.1.113883.3.464.1003.113.12.1037). A radiograph cannot tell open from closed; hip
#: fractures are almost always closed, and the report is preliminary.
HIP_FRACTURE = {"system": SNOMED, "code": "359817006", "display": "Closed fracture of hip (disorder)"}
#: SNOMED CT 359820003 "Closed fracture of neck of femur (disorder)" (same value set), added when the
#: Garden model's staging is reported (a femoral-neck fracture).
NECK_OF_FEMUR_FRACTURE = {
    "system": SNOMED,
    "code": "359820003",
    "display": "Closed fracture of neck of femur (disorder)",
}
#: DICOM DCM 130401 "Visual Explanation": the heat map is the AI's visual explanation of its finding.
VISUAL_EXPLANATION = {"system": DCM, "code": "130401", "display": "Visual Explanation"}
IMAGE = {"system": MEDIA_TYPE, "code": "image", "display": "Image"}
#: Endpoint.connectionType of a DICOMweb retrieve service (the EHR's ImagingStudy endpoints are read the same way).
DICOM_WADO_RS = {"system": ENDPOINT_CONNECTION_TYPE, "code": "dicom-wado-rs", "display": "DICOM WADO-RS"}
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
