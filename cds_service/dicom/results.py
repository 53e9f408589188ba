"""The AI result as DICOM objects for the PACS (IHE AI Results): one SR and one heat-map SC per analysis.

UIDs are derived from (study, model versions, analysed instance) through
:mod:`cds_service.dicom.stow`, so re-analysing with the same models produces the same objects and
the archive keeps one copy; a new model version writes a new series beside the old one.
"""

from __future__ import annotations

import numpy as np
import pydicom

from cds_service.dicom.sc import build_heatmap_sc
from cds_service.dicom.sr import build_measurement_report, model_labels
from cds_service.dicom.stow import result_instance_uid, result_series_uid
from cds_service.explain.heatmap import HipHeatmap, label_hips, overlay
from cds_service.findings import StudyFindings


def result_objects(
    source: pydicom.Dataset,
    findings: StudyFindings,
    display: np.ndarray,
    heat: np.ndarray,
    heatmaps: list[HipHeatmap],
) -> list[pydicom.Dataset]:
    """The TID 1500 Comprehensive 3D SR and the colour heat-map Secondary Capture for ``source``."""
    study, sop, labels = str(source.StudyInstanceUID), str(source.SOPInstanceUID), model_labels(findings)
    objects: list[pydicom.Dataset] = []
    for kind in ("sr", "sc"):
        series = result_series_uid(study, labels, sop, kind)
        instance = result_instance_uid(series, kind)
        if kind == "sr":
            objects.append(
                build_measurement_report(source, findings, series_instance_uid=series, sop_instance_uid=instance)
            )
        else:
            rgb = label_hips(overlay(display, heat), heatmaps, source_shape(source))
            objects.append(
                build_heatmap_sc(source, rgb, series_instance_uid=series, sop_instance_uid=instance, findings=findings)
            )
    return objects


def source_shape(source: pydicom.Dataset) -> tuple[int, int]:
    """(rows, columns) of the analysed image: the frame the hips' boxes refer to."""
    return int(source.Rows), int(source.Columns)
