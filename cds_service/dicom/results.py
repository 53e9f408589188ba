"""The AI result as DICOM objects for the PACS (IHE AI Results): one SR and one heat-map SC per analysis.

UIDs are derived (:mod:`cds_service.dicom.uids`, under ``HIPCAD_UID_ROOT``) from the study, the
model versions, the analysed instance and the content (the SR's coded values, the SC's pixels): a
re-analysis that says the same produces the same objects and the archive keeps one copy; a new
model version or a different result writes a new series beside the old one.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np
import pydicom
from PIL import Image

from cds_service.dicom.decode import decode_dataset
from cds_service.dicom.sc import annotate, build_heatmap_sc, sc_shape
from cds_service.dicom.sr import build_measurement_report, model_labels
from cds_service.dicom.uids import check_root, result_instance_uid, result_series_uid
from cds_service.domain import StudyFindings
from cds_service.explain.heatmap import HipHeatmap, heat_canvas, overlay
from cds_service.settings import get_settings


def result_objects(
    source: pydicom.Dataset,
    findings: StudyFindings,
    heatmaps: list[HipHeatmap],
    *,
    uid_root: str | None = None,
) -> list[pydicom.Dataset]:
    """The TID 1500 Comprehensive 3D SR and the colour heat-map Secondary Capture for ``source``.

    The SC is rendered from ``source`` itself at its own resolution (:func:`heatmap_sc_pixels`).
    ``uid_root`` defaults to the settings' ``HIPCAD_UID_ROOT``.
    """
    root = check_root(get_settings().uid_root if uid_root is None else uid_root)
    created = datetime.now().astimezone()
    study, sop, labels = str(source.StudyInstanceUID), str(source.SOPInstanceUID), model_labels(findings)
    sr = build_measurement_report(source, findings, uid_root=root, created=created)
    rgb = heatmap_sc_pixels(source, heatmaps)
    pixels_digest = hashlib.sha256(np.ascontiguousarray(rgb).tobytes() + repr(rgb.shape).encode()).hexdigest()
    series = result_series_uid(study, labels, sop, "sc", content=pixels_digest, root=root)
    sc = build_heatmap_sc(
        source,
        rgb,
        series_instance_uid=series,
        sop_instance_uid=result_instance_uid(series, "sc"),
        findings=findings,
        uid_root=root,
        created=created,
    )
    return [sr, sc]


def heatmap_sc_pixels(source: pydicom.Dataset, heatmaps: list[HipHeatmap]) -> np.ndarray:
    """The SC's RGB pixels: the radiograph at :func:`~cds_service.dicom.sc.sc_shape`, the heat map
    blended in, laterality, colour scale and caption burned in."""
    grey = decode_dataset(source).grey
    shape = sc_shape(*grey.shape)
    if shape != grey.shape:
        grey = np.asarray(Image.fromarray(grey).resize((shape[1], shape[0]), Image.Resampling.LANCZOS))
    heat = heat_canvas(heatmaps, source_shape(source), shape)
    return annotate(overlay(grey, heat), heatmaps, source_shape(source))


def source_shape(source: pydicom.Dataset) -> tuple[int, int]:
    """(rows, columns) of the analysed image: the frame the hips' boxes refer to."""
    return int(source.Rows), int(source.Columns)
