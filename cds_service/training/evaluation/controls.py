"""Shortcut controls on the phantom groups: is the task trivial, or does the call rest on the fracture?

A global-statistics baseline (intensity histogram + logistic regression), the laterality-marker swap
(the same studies with the other marker letter burned in), and occlusion (blur the fracture box, or a
same-size box off the proximal femur, and count the calls that flip).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from cds_service.training.dataset import CropSet
from cds_service.training.evaluation.groups import GroupResult
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.metrics import bootstrap, roc_auc, wilson

BLUR_FRACTION = 1 / 32  # occlusion: Gaussian σ as a fraction of the crop side (wider than any fracture line)


def histogram_features(images: np.ndarray, bins: int = 32) -> np.ndarray:
    """Normalised 32-bin intensity histogram per crop (global image statistics only)."""
    return np.stack([np.histogram(image, bins=bins, range=(0, 256), density=True)[0] for image in images])


def baseline_auc(train: CropSet, test: CropSet, resamples: int) -> tuple[float, float, float]:
    """AUC of logistic regression on intensity histograms (global image statistics only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(histogram_features(train.images))
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(histogram_features(train.images)), train.fractured)
    score = model.predict_proba(scaler.transform(histogram_features(test.images)))[:, 1]
    return bootstrap(roc_auc, test.fractured, score, resamples=resamples)


def pixel_box(box: np.ndarray) -> tuple[int, int, int, int]:
    """A float (x0, y0, x1, y1) box as the whole pixels it touches (slice bounds)."""
    return int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))


def blurred_copy(image: np.ndarray) -> np.ndarray:
    """The crop under a Gaussian blur of σ = ``BLUR_FRACTION`` × its side: fracture lines vanish, anatomy stays."""
    radius = image.shape[-1] * BLUR_FRACTION
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def paste(image: np.ndarray, fill: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image`` with ``box`` taken from ``fill``."""
    x0, y0, x1, y1 = box
    out = image.copy()
    out[y0:y1, x0:x1] = fill[y0:y1, x0:x1]
    return out


def off_target_box(
    change: np.ndarray, width: int, height: int, avoid: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int] | None:
    """A ``width`` × ``height`` box overlapping none of ``avoid``, where ``change`` sums highest.

    Placing it where the occlusion changes the crop most keeps the control honest: it cannot pass by
    blurring empty background. None when no such box fits.
    """
    rows, cols = change.shape
    if not (0 < width <= cols and 0 < height <= rows):
        return None
    total = np.pad(change.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = total[height:, width:] - total[:-height, width:] - total[height:, :-width] + total[:-height, :-width]
    ys, xs = np.arange(rows - height + 1)[:, None], np.arange(cols - width + 1)[None, :]
    for ax0, ay0, ax1, ay1 in avoid:
        sums[(xs < ax1) & (xs + width > ax0) & (ys < ay1) & (ys + height > ay0)] = -np.inf
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return None if np.isneginf(sums[y, x]) else (int(x), int(y), int(x) + width, int(y) + height)


def occlusion_control(data: CropSet, score: np.ndarray, fracture: OnnxModel) -> dict:
    """Blur the fracture box, or a same-size box off the proximal femur, on correctly called fractures.

    Returns the number of such crops and the fraction (Wilson 95 % CI) of calls that flip to negative
    in each case. A model that reads the fracture flips far more calls in the first case than in the
    second; similar fractions, or many flips off the femur, point at a shortcut.
    """
    threshold = fracture.info.operating_threshold
    called = data.fractured & (score >= threshold) & ~np.isnan(data.boxes[:, 0]) & ~np.isnan(data.femur[:, 0])
    in_box, off_femur = [], []
    for i in np.flatnonzero(called):
        image, blurred = data.images[i], blurred_copy(data.images[i])
        box = pixel_box(data.boxes[i])
        in_box.append(paste(image, blurred, box))
        change = np.abs(blurred.astype(np.float32) - image)
        elsewhere = off_target_box(change, box[2] - box[0], box[3] - box[1], [box, pixel_box(data.femur[i])])
        if elsewhere is not None:
            off_femur.append(paste(image, blurred, elsewhere))
    flips = {}
    for key, images in (("flipped_in_box", in_box), ("flipped_off_femur", off_femur)):
        stack = np.stack(images) if images else data.images[:0]
        flips[key] = list(wilson(int((fracture.p_fracture(stack) < threshold).sum()), len(images)))
    return {"called": int(called.sum()), **flips}


def shortcut_controls(
    result: GroupResult, swapped: CropSet, baseline_train: CropSet, fracture: OnnxModel, resamples: int
) -> dict:
    """The three shortcut controls on one phantom group (``swapped``: the same studies, other marker)."""
    threshold = fracture.info.operating_threshold
    after = fracture.p_fracture(swapped.images)
    return {
        "baseline_auc": list(baseline_auc(baseline_train, result.data, resamples)),
        "marker_swap": {
            "crops": len(after),
            "calls_changed": int(((result.score >= threshold) != (after >= threshold)).sum()),
            "mean_abs_delta": float(np.abs(result.score - after).mean()),
        },
        "occlusion": occlusion_control(result.data, result.score, fracture),
    }
