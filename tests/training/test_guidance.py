"""Box guidance of the heat map: which cells are targets, what the loss rewards, and that the boxes
move with the training shift (a box left behind would teach the map to point beside the fracture)."""

from __future__ import annotations

import math

import pytest

from tests.conftest import IN_CI

if not IN_CI:
    pytest.importorskip("torch")

import torch

from cds_service.training.guidance import cam_box_loss, cell_mask, mask_cells
from cds_service.training.train import _augment, shift_masks

NAN_BOX = [math.nan] * 4


def test_cells_whose_centres_lie_in_the_box_are_targets():
    # 16-px cells: centres at 8, 24, 40, …; the box (20, 30)–(60, 45) holds x centres 24, 40, 56 and y centre 40.
    mask = cell_mask(torch.tensor([[20.0, 30.0, 60.0, 45.0]]), 8, 8, 16.0)[0]
    assert mask.nonzero().tolist() == [[2, 1], [2, 2], [2, 3]]


def test_a_box_too_small_for_a_cell_centre_still_marks_its_own_cell():
    mask = cell_mask(torch.tensor([[33.0, 50.0, 38.0, 54.0]]), 8, 8, 16.0)[0]
    assert mask.nonzero().tolist() == [[3, 2]]


def _peaked(row: int, column: int) -> torch.Tensor:
    cam = torch.zeros(1, 8, 8)
    cam[0, row, column] = 6.0
    return cam


def test_a_fracture_map_is_rewarded_for_peaking_in_the_fracture_box():
    box, femur, fractured = torch.tensor([[20.0, 30.0, 60.0, 45.0]]), torch.tensor([NAN_BOX]), torch.tensor([True])
    inside = cam_box_loss(_peaked(2, 2), box, femur, fractured, 128)
    below = cam_box_loss(_peaked(6, 2), box, femur, fractured, 128)  # the TinyNet-E failure: 4 cells lower
    assert inside < 0.5 < 2.0 < below


def test_a_non_fracture_map_is_rewarded_for_peaking_off_the_femur():
    femur, fractured = torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([False])
    on_femur = cam_box_loss(_peaked(1, 1), torch.tensor([NAN_BOX]), femur, fractured, 128)
    off_femur = cam_box_loss(_peaked(6, 6), torch.tensor([NAN_BOX]), femur, fractured, 128)
    assert off_femur < on_femur


def test_crops_without_a_box_do_not_count():
    cam = torch.stack([_peaked(2, 2)[0], _peaked(6, 6)[0]])
    boxes = torch.tensor([[20.0, 30.0, 60.0, 45.0], NAN_BOX])  # the second fracture is not annotated
    both = cam_box_loss(cam, boxes, torch.tensor([NAN_BOX, NAN_BOX]), torch.tensor([True, True]), 128)
    first = cam_box_loss(cam[:1], boxes[:1], torch.tensor([NAN_BOX]), torch.tensor([True]), 128)
    assert both == pytest.approx(float(first))
    nothing = cam_box_loss(
        cam, torch.tensor([NAN_BOX, NAN_BOX]), torch.tensor([NAN_BOX, NAN_BOX]), torch.tensor([True, False]), 128
    )
    assert float(nothing) == 0.0  # no usable box: no pull at all


def test_gradient_steps_move_the_peak_into_the_box():
    box, femur = torch.tensor([[20.0, 30.0, 60.0, 45.0]]), torch.tensor([NAN_BOX])
    cam = _peaked(6, 2).clone().requires_grad_(True)
    optimiser = torch.optim.SGD([cam], lr=5.0)
    for _ in range(20):
        optimiser.zero_grad()
        cam_box_loss(cam, box, femur, torch.tensor([True]), 128).backward()
        optimiser.step()
    row, column = divmod(int(cam.detach().flatten().argmax()), 8)
    assert cell_mask(box, 8, 8, 16.0)[0, row, column]


def test_the_augmentation_reports_the_shift_it_applied():
    """The boxes are moved by the returned shift; it must be the one applied to the pixels."""
    crop = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    crop[0, 0, 30, 20] = 255
    for seed in range(5):
        moved, (dy, dx) = _augment(crop, torch.Generator().manual_seed(seed))
        y, x = divmod(int(moved.flatten().argmax()), 64)
        assert (y, x) == (30 + dy, 20 + dx)


def _femur_mask() -> torch.Tensor:
    """A 32×32 region mask over a 128-px crop: the neck and head in the upper left and, outside the
    femur box (0, 0)–(64, 64), the greater trochanter at x 64–96 px (mask columns 16–23)."""
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    mask[0, :16, :16] = 1
    mask[0, 4:12, 16:24] = 1
    return mask


def test_a_cell_the_femur_only_touches_is_a_femur_cell():
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    mask[0, 5, 9] = 1  # one mask pixel: the 8×8-cell map's cell (1, 2)
    assert mask_cells(mask, 8, 8)[0].nonzero().tolist() == [[1, 2]]


def test_with_the_femur_mask_heat_on_the_trochanter_is_not_off_the_femur():
    """The version-1 failure: a box from the trochanter's centre rewarded heat on the trochanter."""
    femur, fractured, none = torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([False]), torch.tensor([NAN_BOX])
    on_trochanter, far_off = _peaked(2, 5), _peaked(6, 6)
    by_box = cam_box_loss(on_trochanter, none, femur, fractured, 128)
    by_mask = cam_box_loss(on_trochanter, none, femur, fractured, 128, _femur_mask())
    assert by_box < 0.5  # the box calls the trochanter "off the femur"
    assert by_mask > 2.0 > float(cam_box_loss(far_off, none, femur, fractured, 128, _femur_mask()))


def test_a_non_fracture_with_a_mask_counts_without_a_femur_box():
    cam, none, normal = _peaked(6, 6), torch.tensor([NAN_BOX]), torch.tensor([False])
    assert float(cam_box_loss(cam, none, none, normal, 128, _femur_mask())) > 0.0
    empty = torch.zeros(1, 32, 32, dtype=torch.uint8)  # no region drawn: nothing to pull away from
    assert float(cam_box_loss(cam, none, none, normal, 128, empty)) == 0.0


def test_masks_move_with_the_augmentation_shift():
    crop = torch.zeros(1, 1, 128, 128, dtype=torch.uint8)
    crop[0, 0, 40, 60] = 255
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    mask[0, 10, 15] = 1  # the same point at a quarter of the size
    for seed in range(5):
        moved, shift = _augment(crop, torch.Generator().manual_seed(seed))
        y, x = divmod(int(moved.flatten().argmax()), 128)
        row, column = divmod(int(shift_masks(mask.numpy(), shift, 128).flatten().argmax()), 32)
        assert abs(row - y / 4) <= 1 and abs(column - x / 4) <= 1
