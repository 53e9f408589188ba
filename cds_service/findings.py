"""The analysis result in clinical terms: one finding per hip, shared by cards and reports."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cds_service.inference.client import HipInference, ModelInfo

GARDEN_STAGES = ("I", "II", "III", "IV")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class HipFinding:
    """What the models say about one hip.

    ``garden_probabilities`` are only meaningful for a femoral-neck fracture; they are reported
    when the hip is called fractured.
    """

    laterality: str | None
    fracture_probability: float
    fractured: bool
    garden_probabilities: tuple[float, float, float, float]

    @property
    def side(self) -> str:
        return {"R": "right", "L": "left"}.get(self.laterality or "", "unknown-side")

    @property
    def garden_stage(self) -> str:
        return GARDEN_STAGES[int(np.argmax(self.garden_probabilities))]

    @property
    def displaced_probability(self) -> float:
        """P(Garden III or IV): displaced fractures usually need arthroplasty, not fixation."""
        return float(self.garden_probabilities[2] + self.garden_probabilities[3])

    @property
    def displaced(self) -> bool:
        return self.displaced_probability >= 0.5


@dataclass(frozen=True)
class StudyFindings:
    """All hips of one study, with the models that produced them."""

    hips: list[HipFinding]
    fracture_model: ModelInfo
    garden_model: ModelInfo
    sop_instance_uid: str
    notes: list[str] = field(default_factory=list)

    @property
    def fractured_hips(self) -> list[HipFinding]:
        return [hip for hip in self.hips if hip.fractured]

    @property
    def untrained(self) -> bool:
        return self.fracture_model.untrained or self.garden_model.untrained

    @property
    def disclaimer(self) -> str:
        texts = dict.fromkeys(m.disclaimer for m in (self.fracture_model, self.garden_model) if m.disclaimer)
        return " ".join(texts)


def interpret(
    lateralities: list[str | None], outputs: HipInference, fracture: ModelInfo, garden: ModelInfo
) -> list[HipFinding]:
    """Turn logits into per-hip findings at the fracture model's operating threshold."""
    fracture_index = fracture.class_names.index("fracture") if "fracture" in fracture.class_names else 1
    p_fracture = softmax(outputs.fracture_logits)[:, fracture_index]
    p_garden = softmax(outputs.garden_logits)
    return [
        HipFinding(
            laterality=laterality,
            fracture_probability=float(p_fracture[i]),
            fractured=bool(p_fracture[i] >= fracture.operating_threshold),
            garden_probabilities=tuple(float(p) for p in p_garden[i]),  # type: ignore[arg-type]
        )
        for i, laterality in enumerate(lateralities)
    ]
