"""How visible a fracture line is in the crop the model sees, and whether the model found it.

A phantom study is drawn twice from the same random draws: once as evaluated, once with its fracture
lines at zero contrast (``phantoms.render(fracture_lines=False)``; any displacement stays). Both go
through the same encode → decode → LUT → split → resize, with the same noise, so the difference of the
two crops is the line as served: blurred, resampled, quantised. Per crop, inside the fracture box:

- **contrast**: the mean grey-level drop over the line's core (the pixels where the drop is at least
  half its largest value); 0 when the line did not survive to the crop;
- **clutter**: the standard deviation of the line-free crop's fine detail (the crop minus its Gaussian
  blur at ``CLUTTER_SIGMA`` px): noise and trabecular texture at the scale of a thin line;
- **contrast-to-clutter ratio (CCR)** = contrast / clutter. Below about 1 the line is no darker than
  the texture around it.

Reported for Garden I (the incomplete, faint line the targets are missed on) and Garden II (drawn with
the same width and contrast, but across the whole neck) so the two can be compared.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy.ndimage import gaussian_filter

from cds_service.training.dataset import CropSet
from cds_service.training.metrics import wilson
from cds_service.training.phantoms import LABELS

VISIBILITY_LABELS = ("garden_I", "garden_II")
CLUTTER_SIGMA = 2.0  # px of the crop: detail finer than this is what a 1–3 px line competes with
CCR_BINS = (1.0, 2.0)  # Garden I found is reported below 1, from 1 to 2, and from 2 up


def line_ccr(with_line: np.ndarray, without_line: np.ndarray, box: np.ndarray) -> tuple[float, float, float]:
    """(contrast, clutter, CCR) of one crop's fracture line inside ``box`` (crop pixels)."""
    size = with_line.shape[-1]
    x0, y0 = (int(np.clip(np.floor(v), 0, size - 1)) for v in box[:2])
    x1, y1 = (int(np.clip(np.ceil(v), x + 1, size)) for v, x in zip(box[2:], (x0, y0), strict=True))
    clean = without_line.astype(np.float32)
    drop = (clean - with_line.astype(np.float32))[y0:y1, x0:x1]
    deepest = float(drop.max())
    contrast = float(drop[drop >= deepest / 2].mean()) if deepest > 0 else 0.0
    detail = clean - gaussian_filter(clean, CLUTTER_SIGMA)
    clutter = max(float(detail[y0:y1, x0:x1].std()), 1e-6)
    return contrast, clutter, contrast / clutter


def line_visibility(data: CropSet, without_lines: CropSet, score: np.ndarray, threshold: float) -> dict:
    """Per label of :data:`VISIBILITY_LABELS`: each crop's CCR and whether it was found, and Garden I
    found per CCR bin (Wilson CIs). ``without_lines`` holds the crops of the same studies drawn without
    their lines (``generate(only=VISIBILITY_LABELS, fracture_lines=False)``); its crops of these labels
    pair, in order, with ``data``'s."""
    wanted = [LABELS.index(label) for label in VISIBILITY_LABELS]
    mine, theirs = np.isin(data.label, wanted), np.isin(without_lines.label, wanted)
    same = mine.sum() == theirs.sum() and np.array_equal(data.label[mine], without_lines.label[theirs])
    if not same or not np.allclose(data.boxes[mine], without_lines.boxes[theirs]):
        raise ValueError("the line-free copy does not pair with the evaluated crops (other seed or sites?)")
    ccr = np.array(
        [
            line_ccr(data.images[i], without_lines.images[j], data.boxes[i])[2]
            for i, j in zip(np.flatnonzero(mine), np.flatnonzero(theirs), strict=True)
        ]
    )
    labels, found = data.label[mine], score[mine] >= threshold
    result: dict = {}
    for label in VISIBILITY_LABELS:
        of = labels == LABELS.index(label)
        result[label] = {
            "ccr": ccr[of].round(3).tolist(),
            "found": found[of].tolist(),
            "score": score[mine][of].tolist(),
        }
    garden_i = labels == LABELS.index("garden_I")
    found_by_ccr = {}
    for low, high in pairwise((-np.inf, *CCR_BINS, np.inf)):
        in_bin = garden_i & (ccr >= low) & (ccr < high)
        hits, hips = int(found[in_bin].sum()), int(in_bin.sum())
        found_by_ccr[_bin_name(low, high)] = {"found": hits, "hips": hips, "rate": list(wilson(hits, hips))}
    result["garden_I_found_by_ccr"] = found_by_ccr
    return result


def _bin_name(low: float, high: float) -> str:
    if np.isinf(low):
        return f"CCR < {high:g}"
    if np.isinf(high):
        return f"CCR ≥ {low:g}"
    return f"{low:g} ≤ CCR < {high:g}"
