"""Heat-map localisation on maps whose hot cell is placed by hand: the pointing game and the distance
of the hot spot from the fracture box's centre (the figure that shows a systematic offset)."""

import numpy as np
import pytest

from cds_service.training.dataset import CropSet
from cds_service.training.evaluation.localisation import localisation, pointing_game

SIZE, CELLS = 128, 8  # 16-px cells


def _crops(count: int, box: tuple[float, float, float, float]) -> CropSet:
    return CropSet(
        images=np.zeros((count, SIZE, SIZE), np.uint8),
        label=np.ones(count, int),  # garden_I: every crop fractured
        boxes=np.tile(np.array(box, np.float32), (count, 1)),
        site=np.array(["a"] * count),
        femur=np.full((count, 4), np.nan, np.float32),
    )


def _maps(count: int, row: int, column: int) -> np.ndarray:
    cams = np.zeros((count, CELLS, CELLS), np.float32)  # the fracture class's maps
    cams[:, row, column] = 1.0
    return cams


def test_a_map_peaking_on_the_box_centre_hits_at_distance_near_zero():
    crops = _crops(10, (24.0, 24.0, 56.0, 56.0))  # centre (40, 40) = cell (2, 2)'s centre
    result = localisation(_maps(10, 2, 2), crops, resamples=50)
    assert result["localisation_fracture"][0] == 1.0
    assert result["localisation_distance_median_px"][0] < 2


def test_a_constant_offset_below_the_box_misses_and_shows_its_distance():
    """The TinyNet-E failure in miniature: every hot spot four cells (64 px) below the fracture."""
    crops = _crops(10, (32.0, 32.0, 48.0, 48.0))  # centre (40, 40) = cell (2, 2)'s centre
    result = localisation(_maps(10, 6, 2), crops, resamples=50)
    assert result["localisation_fracture"][0] == 0.0
    assert result["localisation_distance_median_px"][0] == pytest.approx(64, abs=2)


def test_the_pointing_game_per_epoch_skips_crops_without_a_box():
    crops = _crops(4, (24.0, 24.0, 56.0, 56.0))
    crops.boxes[3] = np.nan  # e.g. a non-fracture
    cams = np.concatenate([_maps(2, 2, 2), _maps(2, 6, 6)])  # two on the box, one off, one without a box
    assert pointing_game(cams, crops.boxes, SIZE) == pytest.approx(2 / 3)


def test_localisation_by_subtype_counts_each_subtype_on_its_own():
    """Half the crops garden_I with the hot spot on the box, half ao_A3 with it far below: 100 % and 0 %."""
    crops = _crops(8, (24.0, 24.0, 56.0, 56.0))
    crops.label[4:] = 7  # ao_A3
    cams = np.concatenate([_maps(4, 2, 2), _maps(4, 7, 2)])
    result = localisation(cams, crops, resamples=50)
    by_subtype = result["localisation_fracture_by_subtype"]
    assert sorted(by_subtype) == ["ao_A3", "garden_I"]
    assert by_subtype["garden_I"][0] == 1.0 and by_subtype["ao_A3"][0] == 0.0
    assert result["localisation_fracture"][0] == 0.5
