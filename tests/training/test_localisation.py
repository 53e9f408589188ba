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


def test_the_femur_region_is_the_bones_own_mask_so_heat_on_the_trochanter_is_on_the_femur():
    """The box built from the greater trochanter's centre left its lateral half outside: heat there
    counted as "off the femur" (issue 27). With the bone's own mask (trochanter included) it is on it."""
    count = 6
    femur_box = np.tile(
        np.array([40.0, 40.0, 100.0, 128.0], np.float32), (count, 1)
    )  # head to shaft, not the trochanter
    mask = np.zeros((count, SIZE // 4, SIZE // 4), np.uint8)
    mask[:, 10:32, 10:25] = 1  # the proximal femur, x 40–100 px …
    mask[:, 8:14, 2:10] = 1  # … and the greater trochanter lateral to the box (x 8–40, y 32–56)
    hot = np.zeros((count, CELLS, CELLS), np.float32)
    hot[:, 2, 1] = 1.0  # cell centre (24, 40): on the trochanter, outside the box
    normal = dict(
        images=np.zeros((count, SIZE, SIZE), np.uint8),
        label=np.zeros(count, int),
        boxes=np.full((count, 4), np.nan, np.float32),
        site=np.array(["a"] * count),
        femur=femur_box,
    )
    by_box = localisation(hot, CropSet(**normal), resamples=50)
    by_mask = localisation(hot, CropSet(**normal, femur_mask=mask), resamples=50)
    assert by_box["localisation_femur_region"] == "box" and by_mask["localisation_femur_region"] == "mask"
    assert by_box["localisation_non_fracture"][0] == 1.0  # the artefact: counted as off the femur
    assert by_mask["localisation_non_fracture"][0] == 0.0  # on the trochanter, i.e. on the femur
