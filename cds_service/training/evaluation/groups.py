"""The evaluated groups (internal sites, each external site, or a labelled folder) and their metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cds_service.domain import FEMORAL_NECK, TROCHANTERIC, UNCERTAIN_SITE
from cds_service.findings import fracture_site, low_suspicion, site_aware
from cds_service.training.dataset import CropSet, generate
from cds_service.training.evaluation.localisation import iou_ceiling, localisation
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.metrics import (
    binary_report,
    bootstrap,
    expected_calibration_error,
    proportion,
    reliability_bins,
    roc_curve,
    sensitivity_specificity,
    wilson,
)
from cds_service.training.phantoms import EXTERNAL_SITES, LABELS, TRAINING_SITES

CALIBRATION_BINS = 10
GARDEN_STAGES = ("I", "II", "III", "IV")  # names of the Garden model's classes, in order


@dataclass(frozen=True)
class PhantomGroup:
    """One group of the phantom evaluation: its sites and the offset of its seed."""

    name: str
    sites: tuple[str, ...]
    seed_offset: int

    @property
    def external(self) -> bool:
        return set(self.sites) <= set(EXTERNAL_SITES)

    def crops(
        self,
        studies: int,
        seed: int,
        size: int,
        swap_marker: bool = False,
        progress: bool = True,
        fracture_lines: bool = True,
        only: tuple[str, ...] | None = None,
        generator: int = 1,
    ) -> CropSet:
        """The group's test set for the evaluation's ``seed``: half the studies with one fractured hip,
        losslessly compressed as the site stores them. Internal sites draw each study's acquisition
        around their profile, as training does; an external site keeps its one fixed profile (the
        acquisition the report describes, which no training draw was made around). ``swap_marker``,
        ``fracture_lines`` and ``only`` make the controls' variants of the same studies
        (:func:`dataset.generate`)."""
        return generate(
            studies,
            seed + self.seed_offset,
            size,
            self.sites,
            p_fracture=0.5,
            progress=progress,
            swap_marker=swap_marker,
            compression=True,
            vary=not self.external,
            fracture_lines=fracture_lines,
            only=only,
            generator=generator,
        )


PHANTOM_GROUPS = (
    PhantomGroup("Internal sites (held out: new seed)", TRAINING_SITES, 0),
    PhantomGroup("External site (never used in training)", ("external",), 1),
    PhantomGroup("External site B (never used in training)", ("external-b",), 3),  # seed + 2: the baseline's
)


@dataclass
class GroupResult:
    """One evaluated group: its crops, calibrated p(fracture), metrics and the Garden calls on its neck fractures."""

    name: str
    data: CropSet
    score: np.ndarray
    metrics: dict
    roc: tuple[np.ndarray, np.ndarray, float]
    garden_truth: np.ndarray  # Garden stage index (0–3) of each femoral-neck fracture
    garden_predicted: np.ndarray

    @property
    def femur_unknown(self) -> bool:
        """No non-fracture crop has a proximal-femur box (a labelled folder without them)."""
        negative = ~self.data.fractured
        return bool(negative.any() and np.isnan(self.data.femur[negative, 0]).all())


def stored_thresholds(fracture: OnnxModel) -> dict[str, float]:
    """The fracture model's stored thresholds: "operating" and, when stored, "youden" and
    "high_specificity" (the card's second point, as the service reads it: the Youden point stands in
    when its validation specificity reaches Seed A's; ``inference.client.high_specificity_threshold``)."""
    thresholds = {"operating": fracture.info.operating_threshold}
    youden = fracture.parameter("youden_threshold")
    if youden is not None:
        thresholds["youden"] = youden
    if fracture.info.high_specificity_threshold is not None:
        thresholds["high_specificity"] = fracture.info.high_specificity_threshold
    return thresholds


def site_metrics(data: CropSet, probabilities: np.ndarray, score: np.ndarray, fracture: OnnxModel) -> dict:
    """Fracture site and Garden as the card would show them.

    ``fracture_site_accuracy``: of the true fractures called at the operating point, the share whose named
    site is right (femoral neck for Garden I–IV, trochanteric for AO 31-A; ``uncertain`` counts as not
    right, and its share is reported apart). The Garden model is then judged on the hips the card stages
    (called, named femoral neck, and at or above the high-specificity point where the model stores one:
    below it a hip is a low suspicion, with no site and no stage, as
    :func:`cds_service.findings.interpret` marks it), where a hip that is not a femoral-neck fracture
    counts as wrong. A two-class model names no site: the card stages no hip, and these figures are n/a.
    """
    info = fracture.info
    if not site_aware(info):
        return {"site_aware": False}
    sites = np.array([fracture_site(row, info) for row in probabilities])
    called = score >= info.operating_threshold
    true_site = np.where(data.garden >= 0, FEMORAL_NECK, np.where(data.fractured, TROCHANTERIC, "none"))
    hit = data.fractured & called
    return {
        "site_aware": True,
        "fracture_site_accuracy": list(wilson(int((sites[hit] == true_site[hit]).sum()), int(hit.sum()))),
        "fracture_site_uncertain": list(wilson(int((sites[hit] == UNCERTAIN_SITE).sum()), int(hit.sum()))),
        "staged": called & ~low_suspicion(score, info) & (sites == FEMORAL_NECK),
    }


def operating_points(
    truth: np.ndarray, score: np.ndarray, fracture: OnnxModel, clusters: np.ndarray | None = None
) -> dict[str, dict]:
    """Sensitivity and specificity at the stored operating threshold and, when stored, the Youden threshold
    (study-clustered intervals given ``clusters``)."""
    points = {}
    for name, threshold in stored_thresholds(fracture).items():
        sensitivity, specificity = sensitivity_specificity(truth, score >= threshold, clusters)
        points[name] = {"threshold": threshold, "sensitivity": list(sensitivity), "specificity": list(specificity)}
    return points


def false_negatives(results: list[GroupResult], threshold: float) -> dict[str, list[tuple]]:
    """Missed fractures by subtype: (crop, box, p(fracture), site), the most confident misses first."""
    misses: dict[str, list[tuple]] = {label: [] for label in LABELS[1:]}
    for result in results:
        data = result.data
        for i in np.flatnonzero(data.fractured & (result.score < threshold)):
            misses[LABELS[data.label[i]]].append((data.images[i], data.boxes[i], float(result.score[i]), data.site[i]))
    return {label: sorted(found, key=lambda miss: miss[2]) for label, found in misses.items()}


def evaluate_group(name: str, data: CropSet, fracture: OnnxModel, garden: OnnxModel, resamples: int) -> GroupResult:
    """The metrics of one group of crops (the report section is :func:`.markdown.group_section`)."""
    threshold = fracture.info.operating_threshold
    probabilities, score, maps = fracture.fracture_outputs(data.images)
    sited = site_metrics(data, probabilities, score, fracture)
    truth, studies = data.fractured, data.study
    report = binary_report(truth, score, threshold, resamples=resamples, clusters=studies)
    ece = bootstrap(expected_calibration_error, truth, score, resamples=resamples, clusters=studies)
    subtype = {  # at most one fractured hip per study: these hips are independent (Wilson)
        LABELS[k]: wilson(int((score[data.label == k] >= threshold).sum()), int((data.label == k).sum()))
        for k in range(1, len(LABELS))
    }
    located = localisation(maps, data, resamples)

    neck = data.garden >= 0
    g_probs, _ = garden.run(data.images[neck])
    g_pred, g_truth = g_probs.argmax(1), data.garden[neck]
    as_shown: dict = {}
    if sited["site_aware"]:  # Garden on what the card stages: a staged hip that is no neck fracture is wrong
        staged = sited.pop("staged")
        shown, _ = garden.run(data.images[staged])
        right = shown.argmax(1) == data.garden[staged]  # garden −1 (not a neck fracture) never matches
        as_shown = {
            "garden_as_shown_accuracy": list(proportion(right, data.study[staged])),
            "garden_as_shown_not_neck": int((data.garden[staged] < 0).sum()),
        }

    fpr, tpr, _ = roc_curve(truth, score)
    confidence, frequency, counts = reliability_bins(truth, score, CALIBRATION_BINS)
    metrics = {
        "crops": len(data),
        "fractured": int(truth.sum()),
        "threshold": threshold,
        "temperature": fracture.info.temperature,
        **{k: list(v) for k, v in report.items()},
        "ece": list(ece),
        "reliability": {
            "confidence": [None if np.isnan(c) else float(c) for c in confidence],
            "frequency": [None if np.isnan(f) else float(f) for f in frequency],
            "counts": counts.tolist(),
        },
        "operating_points": operating_points(truth, score, fracture, studies),
        "subtype_sensitivity": {k: list(v) for k, v in subtype.items()},
        # Median p(fracture) per ground-truth label ("none" first): scores_by_subtype.png in numbers.
        "median_score_by_label": {
            label: float(np.median(score[data.label == k])) for k, label in enumerate(LABELS) if (data.label == k).any()
        },
        **{k: list(v) for k, v in located.items() if isinstance(v, tuple)},
        "localisation_femur_region": located["localisation_femur_region"],
        "localisation_fracture_by_subtype": {
            k: list(v) for k, v in located["localisation_fracture_by_subtype"].items()
        },
        "localisation_top5_iou_ceiling": iou_ceiling(data.boxes[truth], data.images.shape[-1]),
        **sited,
        **as_shown,
        "garden_4class_accuracy": list(wilson(int((g_pred == g_truth).sum()), int(neck.sum()))),
        "garden_displaced_accuracy": list(wilson(int(((g_pred >= 2) == (g_truth >= 2)).sum()), int(neck.sum()))),
        # Recall per stage: "Garden I sensitivity" of the staging (a Garden I fracture staged I).
        "garden_stage_recall": {
            stage: list(wilson(int((g_pred[g_truth == k] == k).sum()), int((g_truth == k).sum())))
            for k, stage in enumerate(GARDEN_STAGES)
        },
    }
    return GroupResult(name, data, score, metrics, (fpr, tpr, float(report["auc"][0])), g_truth, g_pred)


def dataset_name(folder: Path) -> str:
    """The group name of a ``--data`` folder: its own name (also for ``.``)."""
    return folder.resolve().name
