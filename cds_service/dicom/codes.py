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
#: LOINC 30768-6 "XR Pelvis and Hip - bilateral Views": TID 1500 "Procedure Reported" (the same code
#: as the FHIR DiagnosticReport.code, :data:`cds_service.fhir.codes.REPORT_CODE_BILATERAL`).
PROCEDURE_REPORTED = Code(fhir_codes.REPORT_CODE_BILATERAL["code"], "LN", fhir_codes.REPORT_CODE_BILATERAL["display"])

# --- Measurement group (TID 1501) ----------------------------------------------------------------
#: SNOMED CT 24136001 "Hip joint structure" — finding site (TID 1501 row "Finding Site"; in CID 4).
HIP_JOINT = _sct(fhir_codes.HIP_JOINT)
#: SNOMED CT 24028007 "Right" / 7771000 "Left" — laterality of the finding site (CID 244).
RIGHT = Code("24028007", SCT, "Right")
LEFT = Code("7771000", SCT, "Left")
LATERALITY = {"R": RIGHT, "L": LEFT}
#: SNOMED CT 359817006 "Closed fracture of hip" — finding type of every hip's group (shared with FHIR).
HIP_FRACTURE = _sct(fhir_codes.HIP_FRACTURE)
#: SNOMED CT 359820003 "Closed fracture of neck of femur" — finding type when the Garden stage is reported.
NECK_OF_FEMUR_FRACTURE = _sct(fhir_codes.NECK_OF_FEMUR_FRACTURE)
#: DCM 121052 "Presence of property" with 121053 "Present" / 121054 "Absent" (PS3.16 Annex D): the
#: model's call at its operating threshold (fracture suspected or not).
PRESENCE = Code("121052", DCM, "Presence of property")
PRESENT = Code("121053", DCM, "Present")
ABSENT = Code("121054", DCM, "Absent")
#: SNOMED CT 373066001 "Yes" / 373067005 "No" (CID 230 "Yes-No").
YES = Code("373066001", SCT, "Yes")
NO = Code("373067005", SCT, "No")
#: DCM 122157 "Probability" is generic; the group holds several probabilities, so each is a local code.
FRACTURE_PROBABILITY = Code("FXPROB", LOCAL_SCHEME, "Fracture probability (AI)")
DISPLACED = Code("DISPLACED", LOCAL_SCHEME, "Displaced femoral-neck fracture (Garden III-IV)")
DISPLACED_PROBABILITY = Code("DISPPROB", LOCAL_SCHEME, "Probability of displaced fracture (Garden III-IV)")
#: No DICOM or SNOMED CT code for the Garden classification and its stages was found: local codes,
#: the same concepts as the FHIR side's local ``garden-stage`` / ``garden-I`` … codes.
GARDEN_STAGE = Code("GARDEN", LOCAL_SCHEME, "Garden stage (AI assessment)")


def garden_stage(stage: str) -> Code:
    """Local code for a Garden stage (I–IV)."""
    return Code(f"GARDEN-{stage}", LOCAL_SCHEME, f"Garden {stage}")


def garden_probability(stage: str) -> Code:
    """Local code for the probability of one Garden stage."""
    return Code(f"GARDENPROB-{stage}", LOCAL_SCHEME, f"Probability of Garden {stage}")


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
