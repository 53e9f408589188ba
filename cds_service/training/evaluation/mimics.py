"""Mimic groups: normal hips carrying one fracture mimic each, per external site (phantom generator 2).

Skin folds across the neck, bowel gas over it, a physeal scar, a herniation pit, an osteophyte: lines
and lucencies a radiologist reads past and an untrained eye calls a fracture. Every hip of these
studies is normal, so each call is a false positive; the rate is reported per mimic at the sensitive
operating point and at the card's high-specificity point (study-clustered 95 % intervals).
"""

from __future__ import annotations

import numpy as np

from cds_service.training.dataset import CropSet, all_mimics, generate
from cds_service.training.evaluation.groups import PHANTOM_GROUPS, stored_thresholds
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.metrics import proportion

#: The issue's target: at most this share of mimic hips called at the card's operating point.
MIMIC_TARGET = 0.05


def mimic_sets(studies: int, seed: int, size: int, progress: bool = True) -> dict[str, dict[str, CropSet]]:
    """Per external site, per mimic kind: ``studies`` studies without fractures, the mimic on both hips
    (the site's fixed profile, as the external groups)."""
    sets: dict[str, dict[str, CropSet]] = {}
    for group in (g for g in PHANTOM_GROUPS if g.external):
        (site,) = group.sites
        sets[site] = {
            kind: generate(
                studies,
                seed + group.seed_offset + 100 + k,
                size,
                (site,),
                p_fracture=0.0,
                progress=progress,
                compression=True,
                vary=False,
                generator=2,
                mimics=(kind,),
            )
            for k, kind in enumerate(all_mimics())
        }
    return sets


def mimic_metrics(sets: dict[str, dict[str, CropSet]], fracture: OnnxModel, resamples: int) -> dict:
    """False-positive rate per site and mimic (and all mimics of a site) at each stored threshold."""
    thresholds = stored_thresholds(fracture)
    result: dict = {}
    for site, kinds in sets.items():
        scores = {kind: fracture.p_fracture(data.images) for kind, data in kinds.items()}
        rows: dict[str, dict] = {}
        for kind, data in kinds.items():
            rows[kind] = {
                name: list(proportion(scores[kind] >= t, data.study, resamples)) for name, t in thresholds.items()
            }
            rows[kind]["median_p"] = float(np.median(scores[kind])) if len(scores[kind]) else float("nan")
        every = np.concatenate(list(scores.values()))
        # Study ids restart per kind: offset them so that the clustered bootstrap keeps kinds apart.
        studies = np.concatenate([data.study + 1_000_000 * k for k, data in enumerate(kinds.values())])
        rows["all mimics"] = {name: list(proportion(every >= t, studies, resamples)) for name, t in thresholds.items()}
        rows["all mimics"]["median_p"] = float(np.median(every))
        result[site] = {"hips": int(len(every)), "by_mimic": rows}
    return result
