"""Line visibility: the contrast-to-clutter ratio of a fracture line in the crop, paired by study."""

from __future__ import annotations

import numpy as np
import pytest

from cds_service.training.dataset import CropSet
from cds_service.training.evaluation.visibility import line_ccr, line_visibility
from cds_service.training.phantoms import LABELS

SIZE = 64
BOX = np.array([20.0, 20.0, 44.0, 44.0], np.float32)


def _textured(seed: int, clutter: float) -> np.ndarray:
    return (128 + np.random.default_rng(seed).normal(0, clutter, (SIZE, SIZE))).clip(0, 255).astype(np.uint8)


def _with_line(image: np.ndarray, depth: int) -> np.ndarray:
    drawn = image.astype(int)
    drawn[32, 24:40] -= depth  # a 1-px line inside BOX
    return drawn.clip(0, 255).astype(np.uint8)


def test_a_line_darker_than_the_texture_has_a_higher_ratio_than_one_lost_in_it():
    clean = _textured(1, 6.0)
    contrast, clutter, deep = line_ccr(_with_line(clean, 30), clean, BOX)
    assert contrast == pytest.approx(30, abs=1) and 3 < clutter < 8 and deep > 3
    _, _, faint = line_ccr(_with_line(clean, 3), clean, BOX)
    assert faint < 1 < deep
    assert line_ccr(clean, clean, BOX)[:1] == (0.0,)  # a line quantised away: no contrast
    # The line outside the box does not count.
    assert line_ccr(_with_line(clean, 30), clean, np.array([0.0, 0.0, 16.0, 16.0]))[0] == 0.0


def _crops(images: list[np.ndarray], labels: list[str]) -> CropSet:
    n = len(images)
    boxes = np.array([BOX if label != "none" else np.full(4, np.nan) for label in labels], np.float32)
    return CropSet(np.stack(images), np.array([LABELS.index(x) for x in labels]), boxes, np.array(["s"] * n), boxes)


def test_garden_i_found_is_counted_by_how_visible_its_line_was():
    clean = [_textured(seed, 6.0) for seed in range(4)]
    labels = ["garden_I", "garden_I", "garden_II", "none"]
    depths = [2, 40, 40, 0]
    data = _crops([_with_line(c, d) for c, d in zip(clean, depths, strict=True)], labels)
    line_free = _crops(clean, labels)
    score = np.array([0.01, 0.9, 0.95, 0.02])
    seen = line_visibility(data, line_free, score, threshold=0.05)
    assert seen["garden_I"]["found"] == [False, True] and seen["garden_II"]["found"] == [True]
    faint, visible = seen["garden_I"]["ccr"]
    assert faint < 1 < 2 <= visible
    bins = seen["garden_I_found_by_ccr"]
    assert (bins["CCR < 1"]["found"], bins["CCR < 1"]["hips"]) == (0, 1)
    assert (bins["CCR ≥ 2"]["found"], bins["CCR ≥ 2"]["hips"]) == (1, 1)
    assert bins["1 ≤ CCR < 2"]["hips"] == 0


def test_a_line_free_copy_of_other_studies_is_refused():
    clean = [_textured(seed, 6.0) for seed in range(2)]
    data = _crops(clean, ["garden_I", "none"])
    with pytest.raises(ValueError, match="does not pair"):
        line_visibility(data, _crops(clean, ["garden_II", "none"]), np.zeros(2), 0.05)
