import numpy as np
import pytest

from cds_service.training.metrics import binary_report, bootstrap, proportion, roc_auc, wilson, youden_threshold


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


def test_ece_of_a_calibrated_set_is_zero():
    from cds_service.training.metrics import expected_calibration_error

    # Each bin's observed frequency equals its scores: 1 of 4 at 0.25, 3 of 4 at 0.75.
    score = np.array([0.25] * 4 + [0.75] * 4)
    truth = np.array([1, 0, 0, 0, 1, 1, 1, 0], bool)
    assert expected_calibration_error(truth, score) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_a_miscalibrated_set_has_its_hand_computed_value():
    from cds_service.training.metrics import expected_calibration_error, reliability_bins

    # Bin [0.8, 0.9): mean score 0.85, 5 of 10 fractured → gap 0.35, weight 10/20.
    # Bin [0.1, 0.2): mean score 0.15, none fractured → gap 0.15, weight 8/20.
    # Bin [0.9, 1.0]: scores 1.0 (the closed last bin), both fractured → gap 0, weight 2/20.
    score = np.array([0.82, 0.88] * 5 + [0.15] * 8 + [1.0, 1.0])
    truth = np.array([1, 0] * 5 + [0] * 8 + [1, 1], bool)
    assert expected_calibration_error(truth, score) == pytest.approx(0.5 * 0.35 + 0.4 * 0.15)
    confidence, frequency, counts = reliability_bins(truth, score)
    assert counts.tolist() == [0, 8, 0, 0, 0, 0, 0, 0, 10, 2]
    assert confidence[8] == pytest.approx(0.85) and frequency[8] == 0.5 and np.isnan(confidence[0])


def test_top_fraction_iou_on_a_synthetic_map():
    from cds_service.training.metrics import top_fraction_iou

    # 20×20 map, top 5 % = 20 pixels: the hot 5-wide, 4-high block at x 10–14, y 2–5.
    yy, xx = np.mgrid[0:20, 0:20]
    heat = 0.001 * (xx + 20 * yy)  # distinct background values, all below the block
    heat[2:6, 10:15] = 5.0
    assert top_fraction_iou(heat, np.array([10, 2, 15, 6]), 0.05) == pytest.approx(1.0)
    assert top_fraction_iou(heat, np.array([10, 2, 20, 6]), 0.05) == pytest.approx(0.5)  # box twice the region
    assert top_fraction_iou(heat, np.array([0, 10, 8, 18]), 0.05) == 0.0
    assert top_fraction_iou(heat, np.array([10, 2, 15, 6]), 0.10) == pytest.approx(0.5)  # region twice the box


def test_study_clustered_intervals_are_wider_when_the_two_hips_of_a_study_agree():
    """Two hips of one study that always agree carry one study's information, not two: the clustered
    interval must be about as wide as for half the hips, clearly wider than Wilson's on all of them."""

    rng = np.random.default_rng(3)
    per_study = rng.random(150) < 0.8
    hits = np.repeat(per_study, 2)  # both hips of a study agree
    studies = np.repeat(np.arange(150), 2)
    naive, clustered = proportion(hits), proportion(hits, studies)
    assert naive[0] == clustered[0]
    halved = proportion(per_study)  # 150 independent studies (Wilson)
    width = lambda v: v[2] - v[1]  # noqa: E731
    assert width(clustered) > 1.25 * width(naive)
    assert width(clustered) == pytest.approx(width(halved), rel=0.25)


def test_independent_hips_give_about_the_same_interval_clustered_or_not():

    rng = np.random.default_rng(4)
    hits = rng.random(400) < 0.7
    studies = np.repeat(np.arange(200), 2)
    naive, clustered = proportion(hits), proportion(hits, studies)
    assert (clustered[2] - clustered[1]) == pytest.approx(naive[2] - naive[1], rel=0.25)


def test_the_clustered_bootstrap_resamples_whole_studies():
    """Each resample holds whole studies: a statistic that checks it never sees a study cut in two."""
    studies = np.repeat(np.arange(30), 2)
    seen = []

    def whole(truth, score):
        counts = np.bincount(truth, minlength=30)
        seen.append(bool(np.all(counts % 2 == 0)))
        return float(score.mean())

    bootstrap(whole, studies, np.arange(60, dtype=float), resamples=50, clusters=studies)
    assert seen and all(seen)
