"""Temperature scaling and the sensitivity operating point (cds_service.training.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from cds_service.training.calibration import fit_temperature, nll, sensitivity_threshold


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
