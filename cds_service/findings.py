"""Model outputs → clinical findings (one per hip); the finding types live in :mod:`cds_service.domain`."""

from __future__ import annotations

import numpy as np

from cds_service.domain import GARDEN_STAGES, HipFinding, HipInference, ModelInfo, StudyFindings

__all__ = ["GARDEN_STAGES", "HipFinding", "StudyFindings", "calibrated_probabilities", "interpret", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def positive_index(info: ModelInfo) -> int:
    """The column of the "fracture" class (1 when the model does not name its classes)."""
    return info.class_names.index("fracture") if "fracture" in info.class_names else 1


def calibrated_probabilities(logits: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Class probabilities [N, C] as the card shows them: ``softmax(logits / temperature)``, with the
    model's prior shift (:attr:`ModelInfo.prior_shift`) added to the fracture logit when it has one.

    The service and the evaluation both call this, so the evaluated percentages are the served ones.
    """
    scaled = np.asarray(logits, np.float64) / info.temperature
    shift = info.prior_shift
    if shift:
        scaled = scaled.copy()
        scaled[:, positive_index(info)] += shift
    return softmax(scaled)


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
