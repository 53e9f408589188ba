"""Shortcut controls on the phantom groups: is the task trivial, or does the call rest on the fracture?

A global-statistics baseline (intensity histogram + logistic regression), the laterality-marker swap
(the same studies with the other marker letter burned in), and occlusion (blur the fracture box, or a
same-size box off the proximal femur, and measure how far p(fracture) falls).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from cds_service.training.dataset import CropSet
from cds_service.training.evaluation.groups import GroupResult
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.metrics import bootstrap, roc_auc, wilson
from cds_service.training.phantoms import LABELS

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


def _median_drop(drop: np.ndarray, resamples: int) -> list[float]:
    """Median of ``drop`` with its percentile bootstrap 95 % interval (NaN for none)."""
    if not len(drop):
        return [float("nan")] * 3
    return list(bootstrap(lambda _, d: float(np.median(d)), drop, drop, resamples=resamples))


def occlusion_control(data: CropSet, score: np.ndarray, fracture: OnnxModel, resamples: int = 2000) -> dict:
    """Blur the fracture box, or a same-size box off the proximal femur, on correctly called fractures.

    Reports how much p(fracture) falls (``drop`` = p before − p after; median with a bootstrap 95 % CI,
    overall and per subtype) in each case, and, as before, the fraction of calls that flip below the
    operating threshold. The fall is the measure: a model that reads the fracture loses most of its
    confidence when the fracture is blurred (median p 0.98 → 0.26 is a drop of 0.72 even where the
    call survives a low threshold), and little when a same-size box elsewhere is.
    """
    threshold = fracture.info.operating_threshold
    called = data.fractured & (score >= threshold) & ~np.isnan(data.boxes[:, 0]) & ~np.isnan(data.femur[:, 0])
    in_box, off_femur, off_index = [], [], []
    for i in np.flatnonzero(called):
        image, blurred = data.images[i], blurred_copy(data.images[i])
        box = pixel_box(data.boxes[i])
        in_box.append(paste(image, blurred, box))
        change = np.abs(blurred.astype(np.float32) - image)
        elsewhere = off_target_box(change, box[2] - box[0], box[3] - box[1], [box, pixel_box(data.femur[i])])
        if elsewhere is not None:
            off_femur.append(paste(image, blurred, elsewhere))
            off_index.append(i)
    result: dict = {"called": int(called.sum())}
    for key, images, index in (
        ("in_box", in_box, np.flatnonzero(called)),
        ("off_femur", off_femur, np.array(off_index, int)),
    ):
        after = fracture.p_fracture(np.stack(images)) if images else np.zeros(0)
        drop = score[index] - after
        labels = data.label[index]
        result[f"flipped_{key}"] = list(wilson(int((after < threshold).sum()), len(images)))
        result[f"drop_{key}"] = _median_drop(drop, resamples)
        result[f"drop_{key}_by_subtype"] = {
            LABELS[k]: _median_drop(drop[labels == k], resamples) for k in np.unique(labels)
        }
    return result


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
        "occlusion": occlusion_control(result.data, result.score, fracture, resamples),
    }
