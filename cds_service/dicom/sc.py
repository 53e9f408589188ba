"""The heat-map overlay as a DICOM Secondary Capture image (highdicom), for any PACS viewer.

The caller renders the overlay (the radiograph with the heat map blended, RGB uint8, e.g. from the
:mod:`cds_service.explain.heatmap` helpers at display size); this module only wraps it: same study
and patient as the source, a new series, Burned In Annotation YES (labels and colours are in the
pixels), the source image referenced (Source Image Sequence, purpose "Source image for image
processing operation"), and the models as Contributing Equipment (IHE AIR).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from cds_service.dicom import codes
from cds_service.dicom.sr import DEVICE_NAME, MANUFACTURER, add_result_context, series_description
from cds_service.findings import StudyFindings

SC_SERIES_NUMBER = 902


def _code_item(code: pydicom.sr.coding.Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def build_heatmap_sc(
    source: pydicom.Dataset,
    overlay_rgb: np.ndarray,
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    findings: StudyFindings | None = None,
) -> hd.sc.SCImage:
    """A Secondary Capture of ``overlay_rgb`` ([rows, cols, 3] uint8) derived from ``source``.

    ``findings`` (optional) adds the models as Contributing Equipment and the not-for-clinical-use
    wording to the Series Description.
    """
    pixels = np.ascontiguousarray(overlay_rgb)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"overlay must be RGB uint8 [rows, cols, 3], got {pixels.dtype} {pixels.shape}")
    orientation = source.get("PatientOrientation")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=tuple(orientation) if orientation and len(orientation) == 2 else ("L", "F"),
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    sc.BurnedInAnnotation = "YES"
    if "BodyPartExamined" in source:  # PELVIS: unpaired, so the Type 2C Laterality stays absent
        sc.BodyPartExamined = source.BodyPartExamined
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "AI heat map (class activation map) blended over the radiograph"
    sc.DerivationCodeSequence = DicomSequence([_code_item(codes.VISUAL_EXPLANATION)])
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = DicomSequence([_code_item(codes.SOURCE_IMAGE_FOR_PROCESSING)])
    sc.SourceImageSequence = DicomSequence([reference])
    sc.ManufacturerModelName = DEVICE_NAME
    if findings is not None:
        sc.SeriesDescription = series_description(findings, "heat map")
        sc.SoftwareVersions = [m.label[:64] for m in (findings.fracture_model, findings.garden_model)]
        add_result_context(sc, findings, set())
    else:
        sc.SeriesDescription = "AI hip fracture heat map (hipcad)"
    return sc
