"""Calibration and operating points, fitted on the validation split and stored with the exported model.

- :func:`fit_temperature`: temperature scaling (Guo et al., 2017). One scalar ``T`` divides the logits
  before the softmax; it minimises the negative log-likelihood of the validation labels. It changes
  the probabilities the card prints (a "98 %" then means about 98 %), never the ranking, so AUC and
  the ROC curve are unchanged.
- :func:`sensitivity_threshold`: the operating threshold for a target sensitivity (Study A's 95.2 %),
  the highest cut-off that still reaches it, so specificity is as high as that sensitivity allows.
- :func:`specificity_threshold`: the second, high-specificity operating point (Seed A's 96.9 %), the
  lowest cut-off that still reaches it, so sensitivity is as high as that specificity allows. The
  card raises a ``warning`` or ``critical`` only above it (:mod:`cds_service.cdshooks.cards`).

All three work on calibrated probabilities: the threshold is compared with what the service computes
(``softmax(logits / T)``, :func:`cds_service.findings.interpret`).
"""

from __future__ import annotations

import math

import numpy as np

PUBLISHED_SENSITIVITY = 0.952  # Study A, external test set
PUBLISHED_SPECIFICITY = 0.969  # Seed A: the high-specificity operating point's target


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer ``targets`` under ``softmax(logits / temperature)``."""
    log_p = log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-log_p[np.arange(len(targets)), np.asarray(targets, int)].mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature in [``low``, ``high``] minimising :func:`nll` on validation logits.

    The NLL is convex in the inverse temperature (the logits scale linearly with it), hence unimodal
    in log T: a golden-section search over log T finds the minimum to well under 0.1 %.
    """
    ratio = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, targets, math.exp(c)), nll(logits, targets, math.exp(d))
    for _ in range(80):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, targets, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, targets, math.exp(d))
    return math.exp((a + b) / 2)


def sensitivity_threshold(
    truth: np.ndarray, score: np.ndarray, target: float = PUBLISHED_SENSITIVITY
) -> tuple[float, float, float]:
    """The highest threshold whose sensitivity is ≥ ``target``; returns (threshold, sensitivity, specificity).

    Like :func:`~cds_service.training.metrics.youden_threshold`, the threshold sits midway between the
    deciding positive score and the next lower score, leaving a margin for data that drifts.
    """
    truth, score = np.asarray(truth, bool), np.asarray(score, np.float64)
    positives = np.sort(score[truth])[::-1]
    if positives.size == 0:
        raise ValueError("no positive cases: a sensitivity target cannot be met")
    needed = math.ceil(target * positives.size - 1e-9)  # positives that must score ≥ the threshold
    cut = float(positives[max(needed, 1) - 1])
    lower = score[score < cut]
    threshold = (cut + float(lower.max())) / 2 if lower.size else cut
    sensitivity = float((score[truth] >= threshold).mean())
    specificity = float((score[~truth] < threshold).mean()) if (~truth).any() else float("nan")
    return threshold, sensitivity, specificity


def specificity_threshold(
    truth: np.ndarray, score: np.ndarray, target: float = PUBLISHED_SPECIFICITY
) -> tuple[float, float, float]:
    """The lowest threshold whose specificity is ≥ ``target``; returns (threshold, sensitivity, specificity).

    The mirror of :func:`sensitivity_threshold`: the threshold sits midway between the deciding
    negative score and the next higher score (just above it when none is higher), so a negative
    scoring exactly the deciding score stays below it.
    """
    truth, score = np.asarray(truth, bool), np.asarray(score, np.float64)
    negatives = np.sort(score[~truth])
    if negatives.size == 0:
        raise ValueError("no negative cases: a specificity target cannot be met")
    needed = math.ceil(target * negatives.size - 1e-9)  # negatives that must score below the threshold
    cut = float(negatives[max(needed, 1) - 1])
    higher = score[score > cut]
    threshold = (cut + float(higher.min())) / 2 if higher.size else float(np.nextafter(cut, np.inf))
    specificity = float((score[~truth] < threshold).mean())
    sensitivity = float((score[truth] >= threshold).mean()) if truth.any() else float("nan")
    return threshold, sensitivity, specificity
