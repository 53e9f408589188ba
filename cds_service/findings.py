"""Model outputs → clinical findings (one per hip); the finding types live in :mod:`cds_service.domain`."""

from __future__ import annotations

import numpy as np

from cds_service.domain import (
    FEMORAL_NECK,
    GARDEN_STAGES,
    SITE_CONFIDENCE,
    TROCHANTERIC,
    UNCERTAIN_SITE,
    HipFinding,
    HipInference,
    ModelInfo,
    StudyFindings,
)

__all__ = [
    "GARDEN_STAGES",
    "HipFinding",
    "StudyFindings",
    "calibrate",
    "calibrated_probabilities",
    "fracture_probability",
    "fracture_site",
    "interpret",
    "softmax",
]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def positive_index(info: ModelInfo) -> int:
    """The column of the "fracture" class (1 when the model does not name its classes)."""
    return info.class_names.index("fracture") if "fracture" in info.class_names else 1


def fracture_site(probabilities: np.ndarray, info: ModelInfo) -> str:
    """The fracture site of one hip from its calibrated class probabilities.

    A model whose classes name the sites (``femoral_neck`` and ``trochanteric`` beside the no-fracture
    class) gives the site whose probability given a fracture is at least :data:`SITE_CONFIDENCE`;
    below that, and for any model without site classes (the two-class models), the site is
    ``uncertain``, so no Garden stage is asserted.
    """
    if FEMORAL_NECK not in info.class_names or TROCHANTERIC not in info.class_names:
        return UNCERTAIN_SITE
    neck = float(probabilities[info.class_names.index(FEMORAL_NECK)])
    trochanteric = float(probabilities[info.class_names.index(TROCHANTERIC)])
    total = neck + trochanteric
    if total <= 0:
        return UNCERTAIN_SITE
    for site, p in ((FEMORAL_NECK, neck), (TROCHANTERIC, trochanteric)):
        if p / total >= SITE_CONFIDENCE:
            return site
    return UNCERTAIN_SITE


def fracture_probability(probabilities: np.ndarray, info: ModelInfo) -> np.ndarray:
    """P(fracture) per row: the fracture column, or 1 − P(no fracture) for a site-aware model."""
    if FEMORAL_NECK in info.class_names and TROCHANTERIC in info.class_names:
        return (
            probabilities[:, info.class_names.index(FEMORAL_NECK)]
            + probabilities[:, info.class_names.index(TROCHANTERIC)]
        )
    return probabilities[:, positive_index(info)]


def calibrate(logits: np.ndarray, temperature: float, shift: float = 0.0, positive: int = 1) -> np.ndarray:
    """``softmax(logits / temperature)`` with ``shift`` log-odds added to column ``positive`` first."""
    scaled = np.asarray(logits, np.float64) / temperature
    if shift:
        scaled[:, positive] += shift  # ``scaled`` is a new array: the caller's logits are untouched
    return softmax(scaled)


def calibrated_probabilities(logits: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Class probabilities [N, C] as the card shows them: :func:`calibrate` with the model's temperature
    and its prior shift (:attr:`ModelInfo.prior_shift`) on the fracture logit.

    The service and the evaluation both call this (the export calls :func:`calibrate` with the values
    it stores), so the evaluated percentages are the served ones.
    """
    return calibrate(logits, info.temperature, info.prior_shift, positive_index(info))


def interpret(
    lateralities: list[str | None], outputs: HipInference, fracture: ModelInfo, garden: ModelInfo
) -> list[HipFinding]:
    """Turn logits into per-hip findings at the fracture model's operating threshold.

    The card's percentages are calibrated probabilities (:func:`calibrated_probabilities`); the
    stored operating threshold is on the same scale (the export chose it there).
    """
    p_classes = calibrated_probabilities(outputs.fracture_logits, fracture)
    p_fracture = fracture_probability(p_classes, fracture)
    p_garden = calibrated_probabilities(outputs.garden_logits, garden)
    return [
        HipFinding(
            laterality=laterality,
            fracture_probability=float(p_fracture[i]),
            fractured=bool(p_fracture[i] >= fracture.operating_threshold),
            garden_probabilities=tuple(float(p) for p in p_garden[i]),  # type: ignore[arg-type]
            site=fracture_site(p_classes[i], fracture),
        )
        for i, laterality in enumerate(lateralities)
    ]
