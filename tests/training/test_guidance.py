"""Box guidance of the heat map: which cells are targets, what the loss rewards, and that the boxes
move with the training shift (a box left behind would teach the map to point beside the fracture)."""

from __future__ import annotations

import math

import pytest

from tests.conftest import IN_CI

if not IN_CI:
    pytest.importorskip("torch")

import torch

from cds_service.training.guidance import cam_box_loss, cell_mask
from cds_service.training.train import _augment

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
