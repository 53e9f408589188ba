"""Temperature scaling and the two operating points (cds_service.training.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from cds_service.training.calibration import (
    PUBLISHED_SPECIFICITY,
    fit_temperature,
    nll,
    sensitivity_threshold,
    specificity_threshold,
)


def _sample(temperature: float, n: int = 20000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) while the model reports z · temperature (over-confident if > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.5, size=(n, 1))
    logits = np.hstack([np.zeros_like(z), z])
    targets = (rng.random(n) < 1 / (1 + np.exp(-z[:, 0]))).astype(int)
    return logits * temperature, targets


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 3.0])
def test_fit_recovers_the_temperature_that_generated_the_labels(true_temperature):
    logits, targets = _sample(true_temperature)
    fitted = fit_temperature(logits, targets)
    assert fitted == pytest.approx(true_temperature, rel=0.06)
    assert nll(logits, targets, fitted) <= nll(logits, targets, 1.0) + 1e-12


def test_fitted_temperature_is_the_nll_minimum():
    logits, targets = _sample(2.0, n=3000)
    fitted = fit_temperature(logits, targets)
    for nearby in (fitted * 0.97, fitted * 1.03):
        assert nll(logits, targets, fitted) < nll(logits, targets, nearby)


def test_sensitivity_threshold_is_the_highest_that_reaches_the_target():
    truth = np.array([1] * 20 + [0] * 10, bool)
    positives = np.linspace(0.99, 0.40, 20)  # the 20th (lowest) positive scores 0.40
    negatives = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.45, 0.5, 0.6])
    score = np.r_[positives, negatives]
    threshold, sensitivity, specificity = sensitivity_threshold(truth, score, target=0.95)
    # 95 % of 20 = 19 positives: the 19th scores ≈ 0.431; midway down to the next lower score (0.40)
    assert 0.40 < threshold < positives[18]
    assert sensitivity == pytest.approx(0.95)
    assert specificity == pytest.approx(0.7)  # negatives 0.45, 0.5 and 0.6 lie above the cut
    strict, strict_sensitivity, _ = sensitivity_threshold(truth, score, target=1.0)
    assert strict < 0.40 and strict_sensitivity == 1.0


def test_sensitivity_threshold_needs_positives():
    with pytest.raises(ValueError):
        sensitivity_threshold(np.zeros(4, bool), np.linspace(0, 1, 4))


def test_specificity_threshold_is_the_lowest_that_reaches_the_target():
    truth = np.array([0] * 20 + [1] * 10, bool)
    negatives = np.linspace(0.01, 0.60, 20)  # the 19th negative scores ≈ 0.569, the 20th 0.60
    positives = np.array([0.3, 0.4, 0.5, 0.58, 0.65, 0.7, 0.8, 0.9, 0.95, 0.99])
    score = np.r_[negatives, positives]
    threshold, sensitivity, specificity = specificity_threshold(truth, score, target=0.95)
    # 95 % of 20 = 19 negatives below: just above the 19th, midway to the next higher score (0.58)
    assert negatives[18] < threshold < 0.58
    assert specificity == pytest.approx(0.95)
    assert sensitivity == pytest.approx(0.7)  # positives 0.3, 0.4 and 0.5 lie below the cut
    lower = np.nextafter(negatives[18], 0)  # any lower threshold calls the 19th negative positive
    assert (score[~truth] < lower).mean() < 0.95
    strict, _, strict_specificity = specificity_threshold(truth, score, target=1.0)
    assert 0.60 < strict < 0.65 and strict_specificity == 1.0


def test_specificity_threshold_above_every_score_still_excludes_the_top_negative():
    truth = np.array([1, 0, 0], bool)
    threshold, sensitivity, specificity = specificity_threshold(truth, np.array([0.2, 0.1, 0.9]), target=1.0)
    assert threshold > 0.9 and specificity == 1.0 and sensitivity == 0.0


def test_specificity_threshold_defaults_to_seed_a_and_needs_negatives():
    rng = np.random.default_rng(5)
    truth = rng.random(4000) < 0.3
    score = np.clip(rng.normal(np.where(truth, 0.7, 0.3), 0.15), 0, 1)
    _, _, specificity = specificity_threshold(truth, score)
    assert PUBLISHED_SPECIFICITY <= specificity < PUBLISHED_SPECIFICITY + 0.005
    with pytest.raises(ValueError):
        specificity_threshold(np.ones(4, bool), np.linspace(0, 1, 4))
