"""Logits → calibrated probabilities and per-hip findings: temperature, prior shift, operating threshold."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from cds_service.domain import HipInference, prior_shift
from cds_service.findings import calibrated_probabilities, interpret
from tests.findings_factory import model

FRACTURE = model("fracture", ("no_fracture", "fracture"))
GARDEN = model("garden", ("garden_I", "garden_II", "garden_III", "garden_IV"))


def _odds(p: np.ndarray) -> np.ndarray:
    return p / (1 - p)


def test_prior_shift_is_the_difference_of_the_log_odds():
    assert prior_shift(0.25, 0.45) == pytest.approx(math.log(1 / 3) - math.log(0.45 / 0.55))
    assert prior_shift(0.45, 0.45) == 0.0
    # Unknown or degenerate shares leave the probabilities as calibrated.
    for prevalence, calibration in [(None, 0.45), (0.25, None), (0.0, 0.45), (1.0, 0.45), (0.25, 1.0)]:
        assert prior_shift(prevalence, calibration) == 0.0


def test_the_shift_multiplies_the_odds_by_the_prevalence_odds_ratio():
    logits = np.array([[0.3, 1.2], [2.0, -1.0], [0.0, 0.0]])
    plain = calibrated_probabilities(logits, dataclasses.replace(FRACTURE, temperature=2.0))[:, 1]
    shifted_model = dataclasses.replace(FRACTURE, temperature=2.0, prevalence=0.25, calibration_prevalence=0.45)
    shifted = calibrated_probabilities(logits, shifted_model)[:, 1]
    expected_ratio = (0.25 / 0.75) / (0.45 / 0.55)
    np.testing.assert_allclose(_odds(shifted) / _odds(plain), expected_ratio, rtol=1e-12)
    # Without the shift: softmax(logits / T), T = 2.
    np.testing.assert_allclose(plain, 1 / (1 + np.exp(-(logits[:, 1] - logits[:, 0]) / 2)), rtol=1e-12)


def test_the_shift_touches_only_the_fracture_class_of_a_model_that_names_it():
    """A model whose class order is reversed is shifted on its own "fracture" column."""
    reversed_model = dataclasses.replace(
        FRACTURE, class_names=("fracture", "no_fracture"), prevalence=0.2, calibration_prevalence=0.5
    )
    p = calibrated_probabilities(np.array([[0.0, 0.0]]), reversed_model)
    assert p[0, 0] == pytest.approx(0.2) and p[0].sum() == pytest.approx(1.0)


def test_findings_call_a_fracture_on_the_shifted_scale():
    """The stored threshold is on the served scale: a hip is fractured when its shown p reaches it."""
    shifted_model = dataclasses.replace(FRACTURE, operating_threshold=0.3, prevalence=0.25, calibration_prevalence=0.5)
    # Raw p 0.5 and 0.6 → odds 1 and 1.5 → shifted odds 1/3 and 0.5 → p 0.25 and 0.333.
    logits = np.array([[0.0, 0.0], [0.0, math.log(1.5)]])
    outputs = HipInference(
        fracture_logits=logits,
        fracture_cam=np.zeros((2, 2, 4, 4), np.float32),
        garden_logits=np.zeros((2, 4)),
        garden_cam=np.zeros((2, 4, 4, 4), np.float32),
    )
    right, left = interpret(["R", "L"], outputs, shifted_model, GARDEN)
    assert right.fracture_probability == pytest.approx(0.25) and not right.fractured
    assert left.fracture_probability == pytest.approx(1 / 3) and left.fractured
    assert right.garden_probabilities == pytest.approx((0.25,) * 4)  # the Garden model has no prevalence


SITED = model("fracture", ("none", "femoral_neck", "trochanteric"))


def _sited_outputs(logits: list[list[float]]) -> HipInference:
    n = len(logits)
    return HipInference(
        fracture_logits=np.array(logits, np.float64),
        fracture_cam=np.zeros((n, 3, 4, 4), np.float32),
        garden_logits=np.zeros((n, 4)),
        garden_cam=np.zeros((n, 4, 4, 4), np.float32),
    )


def test_a_two_class_model_leaves_every_site_uncertain_and_stages_nothing():
    """Today's models have no site output: a fracture is never taken for a femoral-neck fracture."""
    outputs = HipInference(
        fracture_logits=np.array([[-5.0, 5.0]]),
        fracture_cam=np.zeros((1, 2, 4, 4), np.float32),
        garden_logits=np.array([[0.0, 0.0, 5.0, 0.0]]),
        garden_cam=np.zeros((1, 4, 4, 4), np.float32),
    )
    (hip,) = interpret(["R"], outputs, dataclasses.replace(FRACTURE, operating_threshold=0.5), GARDEN)
    assert hip.fractured and hip.site == "uncertain" and not hip.garden_applies


def test_a_site_aware_model_names_the_site_only_when_confident():
    info = dataclasses.replace(SITED, operating_threshold=0.5)
    neck, trochanteric, torn, normal = interpret(
        ["R", "L", "R", "L"],
        _sited_outputs([[0.0, 6.0, 0.0], [0.0, 0.0, 6.0], [0.0, 5.0, 5.0], [6.0, 0.0, 0.0]]),
        info,
        GARDEN,
    )
    assert neck.fractured and neck.site == "femoral_neck" and neck.garden_applies
    assert trochanteric.fractured and trochanteric.site == "trochanteric" and not trochanteric.garden_applies
    # Half neck, half trochanteric: a fracture, site uncertain, no Garden stage.
    assert torn.fractured and torn.site == "uncertain" and not torn.garden_applies
    # P(fracture) is everything but "none": 2 e^0 / (e^6 + 2) for the normal hip.
    assert normal.fracture_probability == pytest.approx(2 / (math.exp(6) + 2))
    assert not normal.fractured and not normal.garden_applies


def test_below_the_high_specificity_point_a_call_is_a_low_suspicion_without_site_or_garden():
    """The demo's normal left hip at 8 % (operating point 7 %, high-specificity point 62 %) was reported
    as 'fracture suspected; femoral neck; Garden II' while its card said 'low suspicion'."""
    info = dataclasses.replace(SITED, operating_threshold=0.07, high_specificity_threshold=0.62)
    # p(fracture) = 1 − p(none): ≈ 0.08 and ≈ 0.88, both confidently "femoral neck" given a fracture.
    low, high = interpret(["L", "R"], _sited_outputs([[2.44, 0.0, -4.0], [0.0, 2.0, -4.0]]), info, GARDEN)
    assert low.fractured and low.low_suspicion and low.site == "uncertain" and not low.garden_applies
    assert high.fractured and not high.low_suspicion and high.site == "femoral_neck" and high.garden_applies
    # A model that stores no high-specificity point has no low suspicions.
    (alone,) = interpret(
        ["L"], _sited_outputs([[2.44, 0.0, -4.0]]), dataclasses.replace(info, high_specificity_threshold=None), GARDEN
    )
    assert alone.fractured and not alone.low_suspicion and alone.site == "femoral_neck"
