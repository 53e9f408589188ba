"""Ground truth of a phantom: the labels, one hip's truth and one rendered radiograph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS = ("none", "garden_I", "garden_II", "garden_III", "garden_IV", "ao_A1", "ao_A2", "ao_A3")
GARDEN = {"garden_I": 0, "garden_II": 1, "garden_III": 2, "garden_IV": 3}


@dataclass(frozen=True)
class HipTruth:
    """Ground truth of one hip. ``box`` is (x0, y0, x1, y1) in stored-image pixels, or None."""

    side: str  # "R" or "L" (patient side)
    label: str
    box: tuple[int, int, int, int] | None
    femur_box: tuple[int, int, int, int] | None = None  # proximal femur: head to lesser trochanter

    @property
    def fractured(self) -> bool:
        return self.label != "none"

    @property
    def garden(self) -> int | None:
        return GARDEN.get(self.label)


@dataclass(frozen=True)
class Phantom:
    """One rendered radiograph: intensity in [0, 1] (1 = bright bone) at working resolution.

    ``noise_applied``: the renderer modelled the detector's noise itself (the physics renderer), so
    the site encoding adds none; ``femur_masks``: (right, left) projected proximal-femur regions at
    working resolution, where the renderer knows them.
    """

    image: np.ndarray
    hips: tuple[HipTruth, ...]  # (right, left) in work-resolution pixels
    confounders: tuple[str, ...]
    noise_applied: bool = False
    femur_masks: tuple[np.ndarray, ...] | None = None
