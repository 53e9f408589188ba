"""Diagnostic-accuracy metrics with 95 % confidence intervals (STARD 2015 style), numpy only.

Proportions (accuracy, sensitivity, specificity) get Wilson score intervals; AUC and F1 get
percentile bootstrap intervals (2,000 resamples, fixed seed).
"""

from __future__ import annotations

import math

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


def bootstrap(statistic, truth: np.ndarray, score: np.ndarray, resamples: int = 2000, seed: int = 7):
    """Point estimate and percentile bootstrap 95 % interval of ``statistic(truth, score)``."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, len(truth), len(truth))
        value = statistic(truth[index], score[index])
        if not math.isnan(value):
            values.append(value)
    low, high = np.percentile(values, [2.5, 97.5]) if values else (float("nan"), float("nan"))
    return statistic(truth, score), float(low), float(high)


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    tp = (truth & predicted).sum()
    denominator = 2 * tp + (~truth & predicted).sum() + (truth & ~predicted).sum()
    return float(2 * tp / denominator) if denominator else float("nan")


def binary_report(truth: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, tuple[float, float, float]]:
    """Accuracy, sensitivity, specificity, F1 and AUC, each (value, low, high)."""
    truth = np.asarray(truth, bool)
    predicted = score >= threshold
    return {
        "accuracy": wilson(int((predicted == truth).sum()), len(truth)),
        "sensitivity": wilson(int((predicted & truth).sum()), int(truth.sum())),
        "specificity": wilson(int((~predicted & ~truth).sum()), int((~truth).sum())),
        "f1": bootstrap(lambda t, s: f1(t, s >= threshold), truth, score),
        "auc": bootstrap(roc_auc, truth, score),
    }
