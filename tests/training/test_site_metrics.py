"""Fracture site and Garden as the card shows them: judged on what a site-aware model calls."""

from __future__ import annotations

import numpy as np

from cds_service.training.dataset import CropSet
from cds_service.training.evaluation.groups import site_metrics
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.phantoms import LABELS
from tests.findings_factory import model


def _crops(labels: list[str]) -> CropSet:
    n = len(labels)
    return CropSet(
        np.zeros((n, 4, 4), np.uint8),
        np.array([LABELS.index(label) for label in labels]),
        np.full((n, 4), np.nan, np.float32),
        np.array(["s"] * n),
        np.full((n, 4), np.nan, np.float32),
    )


def test_the_site_is_judged_on_called_fractures_and_uncertain_is_not_right():
    info = model("fracture", ("none", "femoral_neck", "trochanteric"))
    fracture = OnnxModel("fracture", None, {}, info)
    data = _crops(["garden_II", "ao_A1", "garden_IV", "ao_A2", "none", "none"])
    probabilities = np.array(
        [
            [0.05, 0.90, 0.05],  # neck, right
            [0.05, 0.90, 0.05],  # trochanteric called neck: wrong, and staged
            [0.05, 0.50, 0.45],  # neck, site uncertain
            [0.05, 0.05, 0.90],  # trochanteric, right
            [0.95, 0.04, 0.01],  # normal, not called
            [0.20, 0.75, 0.05],  # normal called a neck fracture at a low threshold: staged
        ]
    )
    score = 1 - probabilities[:, 0]
    found = site_metrics(data, probabilities, score, fracture)
    assert found["site_aware"]
    assert found["fracture_site_accuracy"][0] == 0.5  # 2 of the 4 called fractures
    assert found["fracture_site_uncertain"][0] == 0.25
    assert found["staged"].tolist() == [True, True, False, False, False, True]  # threshold 0.5


def test_below_the_high_specificity_point_the_card_stages_nothing():
    """As the service marks a low suspicion: a neck call at p 0.80 is not staged when the card's point is 0.90."""
    import dataclasses

    info = model("fracture", ("none", "femoral_neck", "trochanteric"))
    info = dataclasses.replace(info, operating_threshold=0.1, high_specificity_threshold=0.9)
    fracture = OnnxModel("fracture", None, {}, info)
    data = _crops(["garden_II", "none"])
    probabilities = np.array([[0.05, 0.90, 0.05], [0.20, 0.75, 0.05]])  # p(fracture) 0.95 and 0.80
    found = site_metrics(data, probabilities, 1 - probabilities[:, 0], fracture)
    assert found["staged"].tolist() == [True, False]


def test_a_two_class_model_names_no_site():
    fracture = OnnxModel("fracture", None, {}, model("fracture", ("no_fracture", "fracture")))
    data = _crops(["garden_II", "none"])
    assert site_metrics(data, np.array([[0.1, 0.9], [0.9, 0.1]]), np.array([0.9, 0.1]), fracture) == {
        "site_aware": False
    }
