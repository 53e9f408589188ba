"""An :class:`~cds_service.domain.Analysis` as bytes and back (what the result table holds).

An ``.npz`` archive (numpy, ``allow_pickle=False``: nothing in the database can run code when read)
holding the arrays (display image, heat layer, per-hip maps, chart JPEG) and one JSON document with
the findings, the model info and the geometry.
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np

from cds_service.domain import UNCERTAIN_SITE, Analysis, HipFinding, ModelInfo, StudyFindings, StudyIdentity
from cds_service.explain.heatmap import ChartImage, HipHeatmap, heat_levels
from cds_service.findings import low_suspicion

FORMAT = 2  # 2: heat as uint8 levels (1: float16 in [0, 1], still read)


def encode(analysis: Analysis) -> bytes:
    findings = analysis.findings
    meta = {
        "format": FORMAT,
        "hips": [dataclasses.asdict(hip) for hip in findings.hips],
        "fracture_model": dataclasses.asdict(findings.fracture_model),
        "garden_model": dataclasses.asdict(findings.garden_model),
        "sop_instance_uid": findings.sop_instance_uid,
        "notes": list(findings.notes),
        "chart": {"content_type": analysis.chart.content_type, "size": list(analysis.chart.size)},
        "image_shape": list(analysis.image_shape),
        "heatmaps": [
            {"laterality": h.laterality, "mirrored": h.mirrored, "box": list(h.box)} for h in analysis.heatmaps
        ],
        "stored_in_pacs": list(analysis.stored_in_pacs),
        # Optional (absent in older results): the viewer's source-resolution image and the study's identity.
        "radiograph": None
        if analysis.radiograph is None
        else {"content_type": analysis.radiograph.content_type, "size": list(analysis.radiograph.size)},
        "study": None if analysis.study is None else dataclasses.asdict(analysis.study),
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "chart": np.frombuffer(analysis.chart.data, dtype=np.uint8),
        "display": np.ascontiguousarray(analysis.display),
        "heat": np.ascontiguousarray(analysis.heat),
    }
    if analysis.radiograph is not None:
        arrays["radiograph"] = np.frombuffer(analysis.radiograph.data, dtype=np.uint8)
    for i, heatmap in enumerate(analysis.heatmaps):
        arrays[f"cam_{i}"] = np.ascontiguousarray(heatmap.cam)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _model(values: dict) -> ModelInfo:
    return ModelInfo(**{**values, "class_names": tuple(values["class_names"])})


def decode(data: bytes) -> Analysis:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        meta = json.loads(archive["meta"].tobytes())
        if meta.get("format") not in (1, FORMAT):
            raise ValueError(f"unknown result format {meta.get('format')!r}")
        fracture_model = _model(meta["fracture_model"])
        findings = StudyFindings(
            hips=[
                HipFinding(
                    h["laterality"],
                    h["fracture_probability"],
                    h["fractured"],
                    tuple(h["garden_probabilities"]),
                    h.get("site", UNCERTAIN_SITE),  # results stored before sites were known
                    # Stored before the flag was: the rule interpret applies, from the stored model.
                    h.get("low_suspicion", bool(low_suspicion(h["fracture_probability"], fracture_model))),
                )
                for h in meta["hips"]
            ],
            fracture_model=fracture_model,
            garden_model=_model(meta["garden_model"]),
            sop_instance_uid=meta["sop_instance_uid"],
            notes=list(meta["notes"]),
        )
        heatmaps = [
            HipHeatmap(h["laterality"], archive[f"cam_{i}"], h["mirrored"], tuple(h["box"]))
            for i, h in enumerate(meta["heatmaps"])
        ]
        chart = ChartImage(archive["chart"].tobytes(), meta["chart"]["content_type"], tuple(meta["chart"]["size"]))
        radiograph = meta.get("radiograph")
        if radiograph is not None:
            radiograph = ChartImage(
                archive["radiograph"].tobytes(), radiograph["content_type"], tuple(radiograph["size"])
            )
        study = StudyIdentity(**meta["study"]) if meta.get("study") else None
        return Analysis(
            findings=findings,
            chart=chart,
            image_shape=tuple(meta["image_shape"]),
            heatmaps=heatmaps,
            display=archive["display"],
            heat=heat_levels(archive["heat"]),
            stored_in_pacs=tuple(meta["stored_in_pacs"]),
            radiograph=radiograph,
            study=study,
        )
