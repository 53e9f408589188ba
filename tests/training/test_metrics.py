import numpy as np
import pytest

from cds_service.training.metrics import binary_report, roc_auc, wilson, youden_threshold


def test_auc_matches_the_mann_whitney_definition():
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.4
    score = truth * 0.5 + rng.random(300)
    pairs = [(p > n) + 0.5 * (p == n) for p in score[truth] for n in score[~truth]]
    assert roc_auc(truth, score) == pytest.approx(np.mean(pairs))


def test_wilson_interval_known_value():
    p, low, high = wilson(45, 50)
    assert p == 0.9 and low == pytest.approx(0.7864, abs=1e-4) and high == pytest.approx(0.9565, abs=1e-4)


def test_youden_threshold_separates_a_separable_set():
    truth = np.array([0, 0, 0, 1, 1, 1], bool)
    score = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    threshold, sensitivity, specificity = youden_threshold(truth, score)
    assert 0.3 < threshold <= 0.7 and sensitivity == specificity == 1.0


def test_binary_report_has_intervals_around_the_estimate():
    rng = np.random.default_rng(1)
    truth = rng.random(200) < 0.5
    score = truth * 0.4 + rng.random(200) * 0.8
    report = binary_report(truth, score, 0.5)
    for value, low, high in report.values():
        assert low <= value <= high
