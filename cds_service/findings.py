"""Model outputs → clinical findings (one per hip); the finding types live in :mod:`cds_service.domain`."""

from __future__ import annotations

import numpy as np

from cds_service.domain import GARDEN_STAGES, HipFinding, HipInference, ModelInfo, StudyFindings

__all__ = [
    "GARDEN_STAGES",
    "HipFinding",
    "StudyFindings",
    "calibrate",
    "calibrated_probabilities",
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
    p_fracture = calibrated_probabilities(outputs.fracture_logits, fracture)[:, positive_index(fracture)]
    p_garden = calibrated_probabilities(outputs.garden_logits, garden)
    return [
        HipFinding(
            laterality=laterality,
            fracture_probability=float(p_fracture[i]),
            fractured=bool(p_fracture[i] >= fracture.operating_threshold),
            garden_probabilities=tuple(float(p) for p in p_garden[i]),  # type: ignore[arg-type]
        )
        for i, laterality in enumerate(lateralities)
    ]
