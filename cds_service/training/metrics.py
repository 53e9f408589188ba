"""Diagnostic-accuracy metrics with 95 % confidence intervals (STARD 2015 style), numpy only.

Proportions (accuracy, sensitivity, specificity) get Wilson score intervals; AUC, F1 and the
expected calibration error get percentile bootstrap intervals (2,000 resamples, fixed seed). Also
here: reliability bins and the top-k % region overlap used for the stricter heat-map criterion.

The two hips of one study are not independent (same patient, acquisition and processing): given
``clusters`` (one study id per hip), intervals come from the **study-clustered** bootstrap, which
resamples whole studies (Field & Welsh, J R Stat Soc B 2007), and proportions use it too instead of
Wilson's interval, which assumes independent hips and is too narrow when the hips of a study agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Z = 1.959963984540054  # two-sided 95 %


def wilson(successes: int, total: int) -> tuple[float, float, float]:
    """Proportion and its Wilson score 95 % interval."""
    if total == 0:
        return float("nan"), float("nan"), float("nan")
    p = successes / total
    centre = (p + Z**2 / (2 * total)) / (1 + Z**2 / total)
    half = Z * math.sqrt(p * (1 - p) / total + Z**2 / (4 * total**2)) / (1 + Z**2 / total)
    return p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))  # float error at 0 and 1


def roc_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties counted half)."""
    truth = np.asarray(truth, bool)
    pos, neg = score[truth], score[~truth]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    ranks[order] = np.arange(1, len(order) + 1)
    for value in np.unique(values[np.r_[False, np.diff(values) == 0]]):  # average ranks of ties
        tied = np.concatenate([pos, neg]) == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def roc_curve(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds (descending)."""
    truth = np.asarray(truth, bool)
    thresholds = np.r_[np.inf, np.unique(score)[::-1]]
    tpr = np.array([(score[truth] >= t).mean() for t in thresholds])
    fpr = np.array([(score[~truth] >= t).mean() for t in thresholds])
    return fpr, tpr, thresholds


def youden_threshold(truth: np.ndarray, score: np.ndarray) -> tuple[float, float, float]:
    """Threshold maximising sensitivity + specificity − 1; returns (threshold, sensitivity, specificity).

    The threshold sits in the middle of the gap below the best cut-off score (between it and the next
    lower score), not on a training score itself: with well-separated classes that leaves a margin on
    both sides for data that drifts (another site).
    """
    fpr, tpr, thresholds = roc_curve(truth, score)
    best = int(np.argmax(tpr - fpr))
    cut = float(min(thresholds[best], 1.0))
    lower = score[score < cut]
    threshold = (cut + float(lower.max())) / 2 if lower.size else cut
    return threshold, float(tpr[best]), float(1 - fpr[best])


def _cluster_members(clusters: np.ndarray) -> list[np.ndarray]:
    """The row indices of each cluster, in order of first appearance."""
    _, first, inverse = np.unique(clusters, return_index=True, return_inverse=True)
    order = np.argsort(first)  # clusters as they first appear, so the result does not depend on ids
    members = [np.flatnonzero(inverse == k) for k in range(len(first))]
    return [members[k] for k in order]


def bootstrap(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    truth: np.ndarray,
    score: np.ndarray,
    resamples: int = 2000,
    seed: int = 7,
    clusters: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap 95 % interval of ``statistic(truth, score)``.

    With ``clusters`` (a study id per row) whole clusters are resampled: the study-clustered bootstrap.
    """
    rng = np.random.default_rng(seed)
    truth, score = np.asarray(truth), np.asarray(score)
    groups = _cluster_members(np.asarray(clusters)) if clusters is not None else None
    values = []
    for _ in range(resamples):
        if groups is None:
            index = rng.integers(0, len(truth), len(truth))
        else:
            picked = rng.integers(0, len(groups), len(groups))
            index = np.concatenate([groups[k] for k in picked]) if len(groups) else np.zeros(0, int)
        value = statistic(truth[index], score[index])
        if not math.isnan(value):
            values.append(value)
    low, high = np.percentile(values, [2.5, 97.5]) if values else (float("nan"), float("nan"))
    return float(statistic(truth, score)), float(low), float(high)


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 score of boolean predictions (NaN when there is nothing to score)."""
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    tp = (truth & predicted).sum()
    denominator = 2 * tp + (~truth & predicted).sum() + (truth & ~predicted).sum()
    return float(2 * tp / denominator) if denominator else float("nan")


def proportion(
    successes: np.ndarray,
    clusters: np.ndarray | None = None,
    resamples: int = 2000,
    seed: int = 7,
) -> tuple[float, float, float]:
    """The share of True in ``successes`` with its 95 % interval: Wilson's for independent rows,
    the study-clustered bootstrap's when ``clusters`` gives each row's study."""
    successes = np.asarray(successes, bool)
    if clusters is None or len(successes) == 0:
        return wilson(int(successes.sum()), len(successes))
    mean = lambda hit, _: float(hit.mean()) if len(hit) else float("nan")  # noqa: E731
    return bootstrap(mean, successes, successes, resamples, seed, clusters)


def sensitivity_specificity(
    truth: np.ndarray, predicted: np.ndarray, clusters: np.ndarray | None = None, resamples: int = 2000
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Sensitivity and specificity of boolean predictions, each (value, low, high): Wilson intervals,
    or study-clustered bootstrap intervals given ``clusters`` (:func:`proportion`)."""
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    within = (lambda mask: None) if clusters is None else (lambda mask: np.asarray(clusters)[mask])
    return (
        proportion(predicted[truth], within(truth), resamples),
        proportion(~predicted[~truth], within(~truth), resamples),
    )


def binary_report(
    truth: np.ndarray,
    score: np.ndarray,
    threshold: float,
    resamples: int = 2000,
    clusters: np.ndarray | None = None,
) -> dict[str, tuple[float, float, float]]:
    """Accuracy, sensitivity, specificity, F1 and AUC at ``threshold``, each (value, low, high);
    study-clustered intervals given ``clusters`` (one study id per hip)."""
    truth = np.asarray(truth, bool)
    predicted = score >= threshold
    sensitivity, specificity = sensitivity_specificity(truth, predicted, clusters, resamples)
    return {
        "accuracy": proportion(predicted == truth, clusters, resamples),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": bootstrap(lambda t, s: f1(t, s >= threshold), truth, score, resamples, clusters=clusters),
        "auc": bootstrap(roc_auc, truth, score, resamples, clusters=clusters),
    }


def reliability_bins(truth: np.ndarray, score: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean predicted probability, observed frequency and count per equal-width bin of ``score``.

    Bin ``k`` holds scores in [k/bins, (k+1)/bins); a score of exactly 1 falls in the last bin.
    Empty bins give NaN for the mean and the frequency (count 0).
    """
    truth, score = np.asarray(truth, float), np.asarray(score, float)
    index = np.clip(np.floor(score * bins).astype(int), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=score, minlength=bins) / counts
        frequency = np.bincount(index, weights=truth, minlength=bins) / counts
    return confidence, frequency, counts


def expected_calibration_error(truth: np.ndarray, score: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the probability ``score`` of the positive class.

    ECE = Σ_k (n_k / N) · |observed frequency_k − mean score_k| over ``bins`` equal-width bins on
    [0, 1] (:func:`reliability_bins`); 0 for a perfectly calibrated model, NaN for an empty set.
    """
    confidence, frequency, counts = reliability_bins(truth, score, bins)
    if counts.sum() == 0:
        return float("nan")
    used = counts > 0
    return float((counts[used] * np.abs(frequency[used] - confidence[used])).sum() / counts.sum())


def top_fraction_iou(heat: np.ndarray, box: np.ndarray, fraction: float = 0.05) -> float:
    """IoU of the ``fraction`` hottest pixels of ``heat`` [H, W] with ``box`` (x0, y0, x1, y1, pixels).

    The region is exactly ``round(fraction · H · W)`` pixels (ties broken by position, so a flat map
    still gives a region of that size); a pixel is in the box when its centre is.
    """
    rows, cols = heat.shape
    count = max(1, round(fraction * rows * cols))
    region = np.zeros(rows * cols, bool)
    region[np.argsort(-heat.ravel(), kind="stable")[:count]] = True
    region = region.reshape(rows, cols)
    yy, xx = np.mgrid[0:rows, 0:cols] + 0.5
    in_box = (xx >= box[0]) & (xx <= box[2]) & (yy >= box[1]) & (yy <= box[3])
    union = int((region | in_box).sum())
    return float((region & in_box).sum() / union) if union else float("nan")
