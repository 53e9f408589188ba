"""Heat-map localisation: Study A's pointing game and the stricter top-k % IoU with the fracture box."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cds_service.training.dataset import CropSet
from cds_service.training.metrics import bootstrap, proportion, top_fraction_iou, wilson
from cds_service.training.phantoms import LABELS

TOP_FRACTION = 0.05  # the stricter localisation: the hottest 5 % of the crop's pixels …
IOU_HIT = 0.3  # … count as a hit when their IoU with the fracture box reaches this


def upsample(cam: np.ndarray, size: int) -> np.ndarray:
    """A class-activation map after ReLU, bilinearly upsampled to the ``size`` × ``size`` crop."""
    heat = Image.fromarray(np.maximum(cam, 0).astype(np.float32), mode="F")
    return np.asarray(heat.resize((size, size), Image.Resampling.BILINEAR))


def hottest_point(heat: np.ndarray) -> tuple[float, float]:
    """(x, y) in crop pixels (pixel centre) of an upsampled map's maximum."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return x + 0.5, y + 0.5


def inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether each (x, y) point lies in its (x0, y0, x1, y1) box."""
    return (
        (points[:, 0] >= boxes[:, 0])
        & (points[:, 0] <= boxes[:, 2])
        & (points[:, 1] >= boxes[:, 1])
        & (points[:, 1] <= boxes[:, 3])
    )


def inside_masks(points: np.ndarray, masks: np.ndarray, size: int) -> np.ndarray:
    """Whether each (x, y) point of a ``size``-px crop falls on its mask (masks [N, m, m], any m)."""
    scale = masks.shape[-1] / size
    cols = np.clip((points[:, 0] * scale).astype(int), 0, masks.shape[-1] - 1)
    rows = np.clip((points[:, 1] * scale).astype(int), 0, masks.shape[-2] - 1)
    return masks[np.arange(len(points)), rows, cols].astype(bool)


def pointing_game(cams: np.ndarray, boxes: np.ndarray, size: int) -> float:
    """Share of the crops with a box (rows of NaN skipped) whose map (``cams`` [N, h, w], over a
    ``size``-px crop) has its hottest point in that box: Study A's criterion on fractures."""
    boxed = ~np.isnan(boxes[:, 0])
    if not boxed.any():
        return float("nan")
    points = np.array([hottest_point(upsample(cam, size)) for cam in cams[boxed]])
    return float(inside(points, boxes[boxed]).mean())


def localisation(cams: np.ndarray, data: CropSet, resamples: int) -> dict:
    """Study A's pointing game on fractures and non-fractures, and the top-k % IoU on fractures."""
    size = data.images.shape[-1]
    positive = data.fractured & ~np.isnan(data.boxes[:, 0])
    # Non-fractures: off the proximal femur — its own projected region where the renderer gave it
    # (trochanters included), else the femur box.
    masked = data.has_femur_masks
    negative = ~data.fractured & (np.ones(len(data), bool) if masked else ~np.isnan(data.femur[:, 0]))
    points, ious = [], []
    for cam, box, fractured in zip(cams, data.boxes, positive, strict=True):
        heat = upsample(cam, size)  # once per crop: the hottest point and, on fractures, the top-k % IoU
        points.append(hottest_point(heat))
        if fractured:
            ious.append(top_fraction_iou(heat, box, TOP_FRACTION))
    xy, iou = np.array(points).reshape(-1, 2), np.array(ious)
    mean_iou = bootstrap(lambda _, s: float(s.mean()), iou, iou, resamples=resamples) if len(iou) else (np.nan,) * 3
    # How far the hottest point lies from the box's centre: a systematic offset (the 12-epoch TinyNet-E
    # pointed ≈ 70 px below every fracture) shows here even where a large box still counts a hit.
    boxes = data.boxes[positive]
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    distance = np.hypot(*(xy[positive] - centre).T) if len(boxes) else np.zeros(0)
    median_distance = (
        bootstrap(lambda _, d: float(np.median(d)), distance, distance, resamples=resamples)
        if len(distance)
        else (np.nan,) * 3
    )
    hit = inside(xy[positive], data.boxes[positive])
    subtype = data.label[positive]
    return {
        "localisation_fracture": wilson(int(hit.sum()), int(positive.sum())),
        # Which fractures the map misses: Study A's criterion per subtype (only subtypes present).
        "localisation_fracture_by_subtype": {
            LABELS[k]: wilson(int(hit[subtype == k].sum()), int((subtype == k).sum())) for k in np.unique(subtype)
        },
        # Both hips of a normal study are normal: their calls are not independent (study-clustered).
        "localisation_non_fracture": proportion(
            ~(
                inside_masks(xy[negative], data.femur_mask[negative], size)
                if masked
                else inside(xy[negative], data.femur[negative])
            ),
            data.study[negative],
            resamples,
        ),
        "localisation_femur_region": "mask" if masked else "box",
        "localisation_top5_iou_mean": mean_iou,
        "localisation_top5_iou_hit": wilson(int((iou >= IOU_HIT).sum()), len(iou)),
        "localisation_distance_median_px": median_distance,
    }


def iou_ceiling(boxes: np.ndarray, size: int) -> float:
    """Mean IoU a top-k % region could reach at best on these fracture boxes (were it sitting exactly on each)."""
    boxes = boxes[~np.isnan(boxes[:, 0])]
    if not len(boxes):
        return float("nan")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    region = round(TOP_FRACTION * size * size)
    return float(np.mean(np.minimum(area, region) / np.maximum(area, region)))
