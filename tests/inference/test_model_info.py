"""The two operating points a model's config carries reach :class:`ModelInfo` (model_info_from_config)."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from cds_service.inference.client import model_info_from_config
from cds_service.inference.triton_server import read_model_config
from cds_service.settings import REPO_ROOT

BASE = {"class_names": "no_fracture,fracture", "operating_threshold": "0.040000", "temperature": "0.8"}


def config(**params: str) -> dict:
    """A model config as Triton's ``get_model_config(as_json=True)`` gives it."""
    values = {**BASE, **params}
    return {
        "name": "fracture",
        "input": [{"name": "image", "dims": ["1", "384", "384"]}],
        "parameters": {key: {"string_value": value} for key, value in values.items()},
    }


def test_the_stored_high_specificity_point_is_read():
    info = model_info_from_config(config(high_specificity_threshold="0.210000", youden_threshold="0.1"), "3")
    assert info.high_specificity_threshold == pytest.approx(0.21)
    assert info.operating_threshold == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("youden_specificity", "expected"),
    [("0.981693", 0.158917), ("0.969000", 0.158917), ("0.968999", None), ("", None)],
)
def test_without_one_the_youden_point_stands_in_only_at_seed_a_specificity(youden_specificity, expected):
    params = {"youden_threshold": "0.158917", "youden_specificity": youden_specificity}
    assert model_info_from_config(config(high_specificity_threshold="", **params), "3").high_specificity_threshold == (
        expected if expected is None else pytest.approx(expected)
    )


def test_a_model_without_either_point_has_none():
    assert model_info_from_config(config(), "1").high_specificity_threshold is None


def test_the_shipped_fracture_model_gets_a_high_specificity_point_above_its_operating_point():
    """``model_repository/fracture`` predates the stored point: its Youden point (specificity 98.2 %) stands in."""
    parsed = read_model_config(REPO_ROOT / "model_repository" / "fracture" / "config.pbtxt")
    info = model_info_from_config(json_format.MessageToDict(parsed, preserving_proto_field_name=True), "5")
    assert info.high_specificity_threshold is not None
    assert info.operating_threshold < info.high_specificity_threshold < 1
