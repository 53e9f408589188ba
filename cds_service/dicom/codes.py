"""Coded concepts for the DICOM result objects (SR, SC), from one place.

Where the FHIR side uses the same concept, the SNOMED CT code is taken from
:mod:`cds_service.fhir.codes`, so cards, FHIR reports and DICOM objects cannot drift apart. Every
standard code here was checked against DICOM PS3.16 (the code tables of Annex D for DCM and the
context groups for SNOMED CT) as shipped in pydicom's concept dictionary; the section is noted at
each code. Concepts with no standard code use the local coding scheme :data:`LOCAL_SCHEME`, which
every object that uses it declares in its Coding Scheme Identification Sequence (PS3.3 C.12.1.1.2).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from cds_service.domain import FEMORAL_NECK, TROCHANTERIC
from cds_service.fhir import codes as fhir_codes

SCT = "SCT"
DCM = "DCM"
UCUM = "UCUM"
#: Private (``99`` prefix, PS3.16 Section 8.2) scheme of this service's own concepts.
LOCAL_SCHEME = "99HIPCAD"
LOCAL_SCHEME_NAME = "hipcad hip-fracture AI local codes"
LOCAL_SCHEME_RESPONSIBLE = "hipcad project"
#: IHE's private scheme for codes a profile defines before DICOM assigns them.
IHE_SCHEME = "99IHE"


def _sct(coding: dict[str, str]) -> Code:
    """A SNOMED CT code shared with the FHIR side (same code value and display)."""
    assert coding["system"] == fhir_codes.SNOMED, coding
    return Code(coding["code"], SCT, coding["display"])


# --- Report (TID 1500) ---------------------------------------------------------------------------
#: DCM 126000 "Imaging Measurement Report" — TID 1500 document title (CID 7021).
REPORT_TITLE = Code("126000", DCM, "Imaging Measurement Report")
#: TID 1500 "Procedure Reported", LOINC (RSNA/LOINC radiology playbook): 30768-6 "XR Pelvis and Hip -
#: bilateral Views" when both hips are imaged (the FHIR DiagnosticReport.code,
#: :data:`cds_service.fhir.codes.REPORT_CODE_BILATERAL`); 26132-1 "XR Hip - right Views" / 26131-3
#: "XR Hip - left Views" when one hip of known side is; 30767-8 "XR Pelvis and Hip Views" otherwise.
PROCEDURE_BILATERAL = Code("30768-6", "LN", "XR Pelvis and Hip - bilateral Views")
PROCEDURE_RIGHT = Code("26132-1", "LN", "XR Hip - right Views")
PROCEDURE_LEFT = Code("26131-3", "LN", "XR Hip - left Views")
PROCEDURE_UNSIDED = Code("30767-8", "LN", "XR Pelvis and Hip Views")


def procedure_reported(lateralities: list[str | None]) -> Code:
    """The procedure code for the hips analysed (``"R"``, ``"L"`` or None each)."""
    if set(lateralities) == {"R", "L"}:
        return PROCEDURE_BILATERAL
    if lateralities == ["R"]:
        return PROCEDURE_RIGHT
    if lateralities == ["L"]:
        return PROCEDURE_LEFT
    return PROCEDURE_UNSIDED


# --- Image Library (TID 1600) -------------------------------------------------------------------
#: DCM 111027 "Image Laterality" (TID 1602 row 4; values from CID 244).
IMAGE_LATERALITY = Code("111027", DCM, "Image Laterality")
#: SNOMED CT 51440002 "Bilateral" (CID 244) — Image Laterality "B".
BILATERAL = Code("51440002", SCT, "Bilateral")

# --- Measurement group (TID 1501) ----------------------------------------------------------------
#: SNOMED CT 24136001 "Hip joint structure" — finding site (TID 1501 row "Finding Site"; in CID 4).
HIP_JOINT = _sct(fhir_codes.HIP_JOINT)
#: SNOMED CT 24028007 "Right" / 7771000 "Left" — laterality of the finding site (CID 244).
RIGHT = Code("24028007", SCT, "Right")
LEFT = Code("7771000", SCT, "Left")
LATERALITY = {"R": RIGHT, "L": LEFT}
#: Image Laterality (0020,0062) values as CID 244 codes.
IMAGE_LATERALITIES = {"R": RIGHT, "L": LEFT, "B": BILATERAL}
#: Finding (TID 1501 row 2, DCM 121071) of a hip the model calls fractured, by fracture site:
#: SNOMED CT 5913000 "Fracture of neck of femur" (Garden-staged); 208548007 "Closed fracture of
#: proximal femur, pertrochanteric" (AO/OTA 31-A; no Garden stage); 359817006 "Closed fracture of
#: hip" when the site is uncertain. The last two are the hip-fracture codes of the VSAC "Lower Body
#: Fracture" value set (2.16.840.1.113883.3.464.1003.113.12.1037); "closed" is not something a
#: radiograph shows, but hip fractures are almost always closed and the report is preliminary.
NECK_OF_FEMUR_FRACTURE = Code("5913000", SCT, "Fracture of neck of femur")
TROCHANTERIC_FRACTURE = Code("208548007", SCT, "Closed fracture of proximal femur, pertrochanteric")
HIP_FRACTURE = Code("359817006", SCT, "Closed fracture of hip")
FRACTURE_BY_SITE = {FEMORAL_NECK: NECK_OF_FEMUR_FRACTURE, TROCHANTERIC: TROCHANTERIC_FRACTURE}
#: Finding of a hip the model does not call fractured: a finding of no fracture, not a fracture
#: qualified as absent. No SNOMED CT "no fracture of hip" concept could be confirmed here, so it is
#: a local code.
NO_FRACTURE = Code("NOFX", LOCAL_SCHEME, "No hip fracture suspected (AI)")


def finding(fractured: bool, site: str) -> Code:
    """The TID 1501 Finding of one hip: no fracture, or the fracture at ``site`` (hip fracture if uncertain)."""
    if not fractured:
        return NO_FRACTURE
    return FRACTURE_BY_SITE.get(site, HIP_FRACTURE)


#: SNOMED CT 373066001 "Yes" / 373067005 "No" (CID 230 "Yes-No").
YES = Code("373066001", SCT, "Yes")
NO = Code("373067005", SCT, "No")
#: DCM 122157 "Probability" is generic; the group holds several probabilities, so each is a local
#: code whose meaning says what it is the probability of (a generic SR viewer shows only the meaning).
FRACTURE_PROBABILITY = Code("FXPROB", LOCAL_SCHEME, "Fracture probability (AI)")
#: No DICOM or SNOMED CT code for the Garden classification and its stages was found: local codes,
#: the same concepts as the FHIR side's local ``garden-stage`` / ``garden-I`` … codes. Each meaning
#: says the stage is conditional on a femoral-neck fracture.
GARDEN_STAGE = Code("GARDEN", LOCAL_SCHEME, "Garden stage (AI, if femoral-neck fracture)")
DISPLACED = Code("DISPLACED", LOCAL_SCHEME, "Displaced (Garden III-IV, AI)")
DISPLACED_PROBABILITY = Code("DISPPROB", LOCAL_SCHEME, "Probability of displacement (Garden III-IV)")


def garden_stage(stage: str) -> Code:
    """Local code for a Garden stage (I–IV)."""
    return Code(f"GARDEN-{stage}", LOCAL_SCHEME, f"Garden {stage}")


def garden_probability(stage: str) -> Code:
    """Local code for the probability of one Garden stage, given a femoral-neck fracture."""
    return Code(f"GARDENPROB-{stage}", LOCAL_SCHEME, f"Probability of Garden {stage}, if femoral-neck fracture")


#: UCUM "%" "Percent" (CID 7181 / CID 83): probabilities are written as percentages.
PERCENT = Code("%", UCUM, "Percent")

# --- Observer and equipment ----------------------------------------------------------------------
#: DCM 121007 "Device" — observer type (CID 270), TID 1002.
DEVICE = Code("121007", DCM, "Device")
#: IHE RAD AI Results (AIR) Rev. 1.1, Section 6.5.3.1 "General Result Encoding Requirements": each
#: algorithm is an item of the Contributing Equipment Sequence with Purpose of Reference
#: (Newcode1, 99IHE, "Processing Algorithm") — the code AIR defines pending a DICOM code (the
#: supplement's line 1630). No DCM code "Processing Algorithm" exists in PS3.16 (CID 7005 has only
#: 109102 "Processing Equipment", 109103 "Modifying Equipment", …).
PROCESSING_ALGORITHM = Code("Newcode1", IHE_SCHEME, "Processing Algorithm")

# --- Secondary Capture --------------------------------------------------------------------------
#: DCM 130401 "Visual explanation" (PS3.16 Annex D; the FHIR Media.type uses the same code, displayed
#: "Visual Explanation") — what the heat-map SC shows.
VISUAL_EXPLANATION = Code(fhir_codes.VISUAL_EXPLANATION["code"], DCM, "Visual explanation")
#: DCM 121322 "Source image for image processing operation" (CID 7202) — Source Image Sequence purpose.
SOURCE_IMAGE_FOR_PROCESSING = Code("121322", DCM, "Source image for image processing operation")


def coding_scheme_identification(schemes: set[str]) -> list[Dataset]:
    """Items of the Coding Scheme Identification Sequence (0008,0110) for the private schemes used."""
    items = []
    if LOCAL_SCHEME in schemes:
        item = Dataset()
        item.CodingSchemeDesignator = LOCAL_SCHEME
        item.CodingSchemeName = LOCAL_SCHEME_NAME
        item.CodingSchemeResponsibleOrganization = LOCAL_SCHEME_RESPONSIBLE
        items.append(item)
    if IHE_SCHEME in schemes:
        item = Dataset()
        item.CodingSchemeDesignator = IHE_SCHEME
        item.CodingSchemeName = "IHE temporary codes"
        item.CodingSchemeResponsibleOrganization = "IHE International"
        items.append(item)
    return items
