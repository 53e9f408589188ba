"""Model outputs → clinical findings (one per hip); the finding types live in :mod:`cds_service.domain`."""

from __future__ import annotations

import numpy as np

from cds_service.domain import GARDEN_STAGES, HipFinding, HipInference, ModelInfo, StudyFindings

__all__ = ["GARDEN_STAGES", "HipFinding", "StudyFindings", "interpret", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def interpret(
    lateralities: list[str | None], outputs: HipInference, fracture: ModelInfo, garden: ModelInfo
) -> list[HipFinding]:
    """Turn logits into per-hip findings at the fracture model's operating threshold.

    Logits are divided by each model's calibration temperature first, so the card's percentages are
    calibrated probabilities (temperature 1 = uncalibrated).
    """
    fracture_index = fracture.class_names.index("fracture") if "fracture" in fracture.class_names else 1
    p_fracture = softmax(outputs.fracture_logits / fracture.temperature)[:, fracture_index]
    p_garden = softmax(outputs.garden_logits / garden.temperature)
    return [
        HipFinding(
            laterality=laterality,
            fracture_probability=float(p_fracture[i]),
            fractured=bool(p_fracture[i] >= fracture.operating_threshold),
            garden_probabilities=tuple(float(p) for p in p_garden[i]),  # type: ignore[arg-type]
        )
        for i, laterality in enumerate(lateralities)
    ]
