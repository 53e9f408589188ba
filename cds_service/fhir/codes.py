"""Code systems and codes we emit in FHIR resources.

Standard codes first: SNOMED CT for findings, body sites, laterality and the suspicion, LOINC for the
report and its US Core category, HL7 terminology for categories and security labels, the HL7 AI
Transparency IG for the AI Device. Codes checked against DICOM PS3.16 as shipped in pydicom's concept
dictionary are marked "(PS3.16 CID n)". Where no standard code exists (the AI's per-hip fracture
probability, the Garden stage and its probabilities) we use the local CodeSystem :data:`LOCAL_SYSTEM`;
the README says so.
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
#: bilateral AP pelvis; LOINC 30767-8 "XR Pelvis and Hip Views" for a single-hip view. Why these and
#: not 18748-4 "Diagnostic imaging study": US Core DiagnosticReport for Report and Note binds ``code``
#: (extensibly) to US Core Non Laboratory Codes, i.e. LOINC codes outside the laboratory classes, so
#: both conform; R4 defines ``code`` as the test or procedure reported, which the playbook code names
#: (18748-4 is a document-type code, what US Core Clinical Notes uses for DocumentReference.type);
#: the report is found as a radiology report through its category LP29684-5 (:data:`RADIOLOGY_LOINC`),
#: and the DICOM SR's Procedure Reported carries the same playbook code.
REPORT_CODE_BILATERAL = {"system": LOINC, "code": "30768-6", "display": "XR Pelvis and Hip - bilateral Views"}
REPORT_CODE_UNILATERAL = {"system": LOINC, "code": "30767-8", "display": "XR Pelvis and Hip Views"}
#: SNOMED CT 359817006 "Closed fracture of hip (disorder)" (member of the VSAC "Lower Body Fracture"
#: value set 2.16.840.1.113883.3.464.1003.113.12.1037): the finding each hip's Observation looks for
#: (``Observation.code``; its value says suspected or not) and the focus of the suspected-finding
#: situation in ``conclusionCode`` (:func:`suspected`). Never asserted as a diagnosis. A radiograph
#: cannot tell open from closed; hip fractures are almost always closed.
HIP_FRACTURE = {"system": SNOMED, "code": "359817006", "display": "Closed fracture of hip (disorder)"}
#: SNOMED CT 359820003 "Closed fracture of neck of femur (disorder)" (same value set): the finding
#: instead of :data:`HIP_FRACTURE` when the model names the femoral neck as the site.
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
#: HL7 v2 table 0074 "RAD" (Radiology) — DiagnosticReport.category (R4 example binding).
RADIOLOGY = {"system": V2_0074, "code": "RAD", "display": "Radiology"}
#: LOINC LP29684-5 "Radiology" — DiagnosticReport.category, the US Core slice (US Core
#: DiagnosticReport Category Codes): what ``category=LP29684-5`` searches for radiology reports match.
RADIOLOGY_LOINC = {"system": LOINC, "code": "LP29684-5", "display": "Radiology"}
#: observation-category "imaging".
IMAGING = {"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}
#: v3 ObservationValue "AIAST" (Artificial Intelligence asserted): a security label, in ``meta.security``
#: of every resource the service creates (HL7 AI Transparency on FHIR, ValueSet ProvenanceVS; a
#: ``_security=AIAST`` search finds them), and Provenance.reason (AI Provenance profile).
AI_ASSERTED = {"system": V3_OBSERVATION_VALUE, "code": "AIAST", "display": "Artificial Intelligence asserted"}
#: SNOMED CT 24136001 "Hip joint structure" (body site; PS3.16 CID 4).
HIP_JOINT = {"system": SNOMED, "code": "24136001", "display": "Hip joint structure"}
#: SNOMED CT 24028007 "Right" / 7771000 "Left" (qualifier values; PS3.16 CID 244), refining the body
#: site through the SNOMED CT attribute 272741003 "Laterality" (:func:`lateral_hip_joint`).
RIGHT = {"system": SNOMED, "code": "24028007", "display": "Right"}
LEFT = {"system": SNOMED, "code": "7771000", "display": "Left"}
LATERALITY = {"R": RIGHT, "L": LEFT}
LATERALITY_ATTRIBUTE = "272741003"
#: SNOMED CT 415684004 "Suspected" (PS3.16 CID 3770) — a hip's Observation value when the model calls
#: a fracture at its operating point; 260385009 "Negative" (PS3.16 CID 250) when it does not. The AI
#: suspects; it does not confirm or exclude.
SUSPECTED = {"system": SNOMED, "code": "415684004", "display": "Suspected"}
NEGATIVE = {"system": SNOMED, "code": "260385009", "display": "Negative"}

# --- HL7 AI Transparency on FHIR (STU1) and Provenance --------------------------------------------
AI_DEVICE_TYPE_SYSTEM = "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS"
#: AI Device profile: Device.type SHALL be Artificial-Intelligence; AI Provenance: the AI agent's role.
ARTIFICIAL_INTELLIGENCE = {
    "system": AI_DEVICE_TYPE_SYSTEM,
    "code": "Artificial-Intelligence",
    "display": "All kinds of Artificial Intelligence",
}
#: The AIKind extension's value: convolutional neural networks classifying radiographs.
DEEP_LEARNING = {"system": AI_DEVICE_TYPE_SYSTEM, "code": "Deep-Learning-Models", "display": "Deep Learning Models"}
AI_KIND_EXTENSION = "http://hl7.org/fhir/uv/aitransparency/StructureDefinition/aitransparency.AIKind"
PROVENANCE_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
#: Provenance.agent.type "author": the AI produced the report.
AUTHOR = {"system": PROVENANCE_PARTICIPANT_TYPE, "code": "author", "display": "Author"}
V3_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
#: Provenance.activity "CREATE".
CREATE = {"system": V3_DATA_OPERATION, "code": "CREATE", "display": "create"}
#: DICOM DCM 111003 "Algorithm Version" (PS3.16 Annex D): the type of each model's Device.version.
ALGORITHM_VERSION = {"system": DCM, "code": "111003", "display": "Algorithm Version"}

#: Local: the service software's own Device.version (no standard code for "software version").
SOFTWARE_VERSION = {"system": LOCAL_SYSTEM, "code": "software-version", "display": "Software version"}
FRACTURE_PROBABILITY = {"system": LOCAL_SYSTEM, "code": "fracture-probability", "display": "Fracture probability"}
#: No SNOMED CT or LOINC code for the Garden classification was found: local, and only ever emitted
#: for a femoral-neck fracture, labelled as conditional on one.
GARDEN_STAGE = {"system": LOCAL_SYSTEM, "code": "garden-stage", "display": "Garden stage (AI assessment)"}
DISPLACED_PROBABILITY = {
    "system": LOCAL_SYSTEM,
    "code": "displaced-probability",
    "display": "Probability of displaced femoral-neck fracture (Garden III–IV)",
}


def garden_coding(stage: str) -> dict[str, str]:
    """Local code for a Garden stage (I–IV)."""
    return {"system": LOCAL_SYSTEM, "code": f"garden-{stage}", "display": f"Garden {stage}"}


def garden_probability(stage: str) -> dict[str, str]:
    """Local code for the probability of one Garden stage (I–IV), given a femoral-neck fracture."""
    return {"system": LOCAL_SYSTEM, "code": f"garden-{stage}-probability", "display": f"Probability of Garden {stage}"}


def lateral_hip_joint(laterality: str | None) -> dict[str, str]:
    """The hip joint with its side, a SNOMED CT post-coordinated expression (SNOMED CT Compositional
    Grammar: ``24136001:272741003=24028007`` is "hip joint structure, laterality right"), which
    ``Coding.code`` may hold for ``http://snomed.info/sct``; the plain hip joint when the side is unknown."""
    side = LATERALITY.get(laterality or "")
    if side is None:
        return dict(HIP_JOINT)
    return {
        "system": SNOMED,
        "code": f"{HIP_JOINT['code']}:{LATERALITY_ATTRIBUTE}={side['code']}",
        "display": f"{side['display']} hip joint structure",
    }


def suspected(finding: dict[str, str]) -> dict[str, str]:
    """``finding`` as a suspicion, not a diagnosis: the SNOMED CT situation 413350009 "Finding with
    explicit context" whose 246090004 "Associated finding" is ``finding``, 408729009 "Finding context"
    415684004 "Suspected", 408731000 "Temporal context" 410512000 "Current or specified time" and
    408732007 "Subject relationship context" 410604004 "Subject of record" (SNOMED CT Concept Model,
    situation with explicit context; written in Compositional Grammar, as ``Coding.code`` allows)."""
    context = "408729009=415684004,408731000=410512000,408732007=410604004"
    display = finding["display"].removesuffix(" (disorder)")
    return {
        "system": SNOMED,
        "code": f"413350009:{{246090004={finding['code']},{context}}}",
        "display": f"Suspected {display[0].lower()}{display[1:]}",
    }
