"""Box guidance of the class-activation map: the heat map is trained to point where the evidence is.

A network trained on image labels alone may carry the evidence for a fracture anywhere its receptive
field reaches: the 12-epoch TinyNet-E run ranked crops as well as the shipped model, but the hottest
cell of its map sat a constant ≈ 70 px below the fracture (docs/model-card.md). The phantoms carry
the fracture's box and the proximal femur's box, so the map can be taught where to point:

* on a fracture, the fracture-class map's softmax over cells should put its mass on the cells whose
  centres lie in the fracture box (``-log`` of that mass);
* on a non-fracture, the mass should lie off the proximal femur (Study A's non-fracture criterion):
  off the bone's own projected region where the renderer gives it (phantoms version 2, trochanters
  included: :func:`mask_cells`), else off the femur box. A box built from the greater trochanter's
  centre taught the version-1 maps to glow on the lateral trochanter, just outside the box.

This is an auxiliary term beside the classification loss (``TrainConfig.cam_box_weight``); crops
without a box (real data without annotations) simply do not contribute. The map is still the
forward-pass CAM, equal to Grad-CAM at the pooled layer: only what the network learns changes.
"""

from __future__ import annotations

import torch


def cell_mask(boxes: torch.Tensor, height: int, width: int, stride: float) -> torch.Tensor:
    """[B, h, w] bool: the map cells whose centres lie in each (x0, y0, x1, y1) box (crop pixels).

    A box too small to hold a cell centre still marks the one cell that holds the box's centre, so
    every box has at least one target cell.
    """
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * stride
    in_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])
    in_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])
    mask = in_y[:, :, None] & in_x[:, None, :]
    centre_y = ((boxes[:, 1] + boxes[:, 3]) / 2 / stride).long().clamp(0, height - 1)
    centre_x = ((boxes[:, 0] + boxes[:, 2]) / 2 / stride).long().clamp(0, width - 1)
    mask[torch.arange(len(boxes)), centre_y, centre_x] = True
    return mask


def mask_cells(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, h, w] bool: the map cells that hold any pixel of each region mask (``masks`` [B, m, m],
    nonzero inside, over the whole crop). A cell the femur only touches is still a femur cell, so
    "off the femur" never rewards heat on the bone's edge."""
    pooled = torch.nn.functional.adaptive_max_pool2d(masks.float()[:, None], (height, width))[:, 0]
    return pooled > 0


def cam_box_loss(
    cam: torch.Tensor,
    fracture_boxes: torch.Tensor,
    femur_boxes: torch.Tensor,
    fractured: torch.Tensor,
    size: int,
    femur_masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean ``-log`` softmax mass of the fracture-class map (``cam`` [B, h, w]) on its target cells.

    Targets: the fracture box on fractures; on non-fractures every cell off the femur: off
    ``femur_masks`` ([B, m, m], the bone's projected region over the crop) when given, else off the
    femur box. Crops whose box is missing (NaN) are left out (with masks, every non-fracture
    counts); with none left the loss is 0 (still in the graph).
    """
    batch, height, width = cam.shape
    stride = size / width
    fracture_cells = cell_mask(torch.nan_to_num(fracture_boxes), height, width, stride)
    if femur_masks is not None:
        femur_cells = mask_cells(femur_masks, height, width)
        has_femur = femur_cells.flatten(1).any(1)
    else:
        femur_cells = cell_mask(torch.nan_to_num(femur_boxes), height, width, stride)
        has_femur = ~femur_boxes[:, 0].isnan()
    target = torch.where(fractured[:, None, None], fracture_cells, ~femur_cells)
    usable = torch.where(fractured, ~fracture_boxes[:, 0].isnan(), has_femur)
    if not bool(usable.any()):
        return cam.sum() * 0.0
    log_p = torch.log_softmax(cam.reshape(batch, -1), dim=1)
    masked = log_p.masked_fill(~target.reshape(batch, -1), float("-inf"))
    return -torch.logsumexp(masked, dim=1)[usable].mean()
