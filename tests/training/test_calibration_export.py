"""The high-specificity point travels from the export (config.pbtxt) to the service's ModelInfo."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from cds_service.inference.client import model_info_from_config
from cds_service.inference.triton_server import read_model_config
from tests.conftest import IN_CI

if not IN_CI:  # the [train] extra is optional on a developer machine; CI installs it and must run these
    pytest.importorskip("torch")


def _served(metadata, tmp_path) -> tuple[dict[str, str], object]:
    from cds_service.training.export import triton_config

    path = tmp_path / "config.pbtxt"
    path.write_text(triton_config("fracture", metadata, (12, 12)))
    parsed = read_model_config(path)
    params = {key: value.string_value for key, value in parsed.parameters.items()}
    return params, model_info_from_config(json_format.MessageToDict(parsed, preserving_proto_field_name=True), "1")


def test_the_export_writes_the_high_specificity_point_with_its_validation_figures(tmp_path):
    from cds_service.training.export import ExportMetadata

    metadata = ExportMetadata(
        ("no_fracture", "fracture"),
        "test_resnet",
        96,
        operating_threshold=0.04,
        high_specificity_threshold=0.23,
        high_specificity_sensitivity=0.81,
        high_specificity_specificity=0.97,
    )
    params, info = _served(metadata, tmp_path)
    assert params["high_specificity_threshold"] == "0.230000"
    assert params["high_specificity_sensitivity"] == "0.810000"
    assert params["high_specificity_specificity"] == "0.970000"
    assert info.high_specificity_threshold == pytest.approx(0.23) and info.operating_threshold == pytest.approx(0.04)


def test_an_export_without_one_stores_none(tmp_path):
    from cds_service.training.export import ExportMetadata

    params, info = _served(ExportMetadata(("no_fracture", "fracture"), "test_resnet", 96), tmp_path)
    assert params["high_specificity_threshold"] == "" and info.high_specificity_threshold is None
