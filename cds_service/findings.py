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
    "fracture_cam",
    "fracture_columns",
    "fracture_probability",
    "fracture_site",
    "interpret",
    "site_aware",
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


def site_aware(info: ModelInfo) -> bool:
    """True for a fracture model whose classes name the fracture sites (none / femoral neck / trochanteric)."""
    return FEMORAL_NECK in info.class_names and TROCHANTERIC in info.class_names


def fracture_columns(info: ModelInfo) -> list[int]:
    """The class columns whose probabilities add up to p(fracture): the site classes of a site-aware
    model, else the one fracture class (:func:`positive_index`)."""
    if site_aware(info):
        return [info.class_names.index(FEMORAL_NECK), info.class_names.index(TROCHANTERIC)]
    return [positive_index(info)]


def fracture_site(probabilities: np.ndarray, info: ModelInfo) -> str:
    """The fracture site of one hip from its calibrated class probabilities.

    A site-aware model (:func:`site_aware`) gives the site whose probability given a fracture is at
    least :data:`SITE_CONFIDENCE`; below that, and for any model without site classes (the two-class
    models), the site is ``uncertain``, so no Garden stage is asserted.
    """
    if not site_aware(info):
        return UNCERTAIN_SITE
    neck, trochanteric = (float(probabilities[i]) for i in fracture_columns(info))
    total = neck + trochanteric
    if total <= 0:
        return UNCERTAIN_SITE
    for site, p in ((FEMORAL_NECK, neck), (TROCHANTERIC, trochanteric)):
        if p / total >= SITE_CONFIDENCE:
            return site
    return UNCERTAIN_SITE


def fracture_probability(probabilities: np.ndarray, info: ModelInfo) -> np.ndarray:
    """P(fracture) per row of class probabilities [N, C]: the sum of :func:`fracture_columns`."""
    return probabilities[:, fracture_columns(info)].sum(axis=1)


def fracture_cam(cams: np.ndarray, probabilities: np.ndarray, info: ModelInfo) -> np.ndarray:
    """The fracture map per hip [N, h, w] from the class maps [N, C, h, w]: the fracture class's map, or
    for a site-aware model the site classes' maps weighted by each site's probability given a fracture
    (the map of the site the model believes in, blended where it hesitates)."""
    columns = fracture_columns(info)
    if len(columns) == 1:
        return cams[:, columns[0]]
    weights = probabilities[:, columns]
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return np.einsum("nk,nkhw->nhw", weights.astype(np.float32), cams[:, columns])


def calibrate(logits: np.ndarray, temperature: float, shift: float = 0.0, positive: int | list[int] = 1) -> np.ndarray:
    """``softmax(logits / temperature)`` with ``shift`` log-odds added to the ``positive`` column(s) first
    (all fracture columns of a site-aware model: the odds of fracture against none move by ``shift``,
    the sites' ratio stays)."""
    scaled = np.asarray(logits, np.float64) / temperature
    if shift:
        scaled[:, positive] += shift  # ``scaled`` is a new array: the caller's logits are untouched
    return softmax(scaled)


def calibrated_probabilities(logits: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Class probabilities [N, C] as the card shows them: :func:`calibrate` with the model's temperature
    and its prior shift (:attr:`ModelInfo.prior_shift`) on the fracture logit(s).

    The service and the evaluation both call this (the export calls :func:`calibrate` with the values
    it stores), so the evaluated percentages are the served ones.
    """
    return calibrate(logits, info.temperature, info.prior_shift, fracture_columns(info))


def low_suspicion(p_fracture: np.ndarray | float, fracture: ModelInfo) -> np.ndarray:
    """Where ``p_fracture`` (calibrated) is called at the operating point but lies below the model's
    high-specificity point (:attr:`ModelInfo.high_specificity_point`): False everywhere for a model
    that stores none. The one rule the service, the result store and the evaluation share."""
    p = np.asarray(p_fracture)
    high = fracture.high_specificity_point
    if high is None:
        return np.zeros(p.shape, bool)
    return (p >= fracture.operating_threshold) & (p < high)


def interpret(
    lateralities: list[str | None], outputs: HipInference, fracture: ModelInfo, garden: ModelInfo
) -> list[HipFinding]:
    """Turn logits into per-hip findings at the fracture model's operating threshold.

    The card's percentages are calibrated probabilities (:func:`calibrated_probabilities`); the
    stored operating thresholds are on the same scale (the export chose them there). A hip called at
    the operating point but below the high-specificity one is a low suspicion
    (:attr:`HipFinding.low_suspicion`): its site is not named.
    """
    p_classes = calibrated_probabilities(outputs.fracture_logits, fracture)
    p_fracture = fracture_probability(p_classes, fracture)
    p_garden = calibrated_probabilities(outputs.garden_logits, garden)
    low = low_suspicion(p_fracture, fracture)
    return [
        HipFinding(
            laterality=laterality,
            fracture_probability=float(p_fracture[i]),
            fractured=bool(p_fracture[i] >= fracture.operating_threshold),
            garden_probabilities=tuple(float(p) for p in p_garden[i]),  # type: ignore[arg-type]
            site=UNCERTAIN_SITE if low[i] else fracture_site(p_classes[i], fracture),
            low_suspicion=bool(low[i]),
        )
        for i, laterality in enumerate(lateralities)
    ]
