"""Mimic groups: normal hips only, one mimic each, false positives reported per site and mimic."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import IN_CI

if not IN_CI:
    pytest.importorskip("onnxruntime")

from cds_service.training.dataset import all_mimics
from cds_service.training.evaluation.groups import stored_thresholds
from cds_service.training.evaluation.markdown import mimic_section
from cds_service.training.evaluation.mimics import mimic_metrics, mimic_sets
from cds_service.training.evaluation.onnx_model import OnnxModel

REPOSITORY = Path(__file__).parents[2] / "model_repository"


def test_mimic_groups_hold_only_normal_hips_and_report_every_mimic(tmp_path):
    fracture = OnnxModel.load(REPOSITORY, "fracture")
    sets = mimic_sets(studies=1, seed=5, size=fracture.info.input_size, progress=False)
    assert set(sets) == {"external", "external-b"}
    for kinds in sets.values():
        assert tuple(kinds) == all_mimics()
        for data in kinds.values():
            assert len(data) == 2 and not data.fractured.any()  # a mimic carries no fracture label
    found = mimic_metrics(sets, fracture, resamples=50)
    thresholds = stored_thresholds(fracture)
    for site in ("external", "external-b"):
        rows = found[site]["by_mimic"]
        assert set(rows) == {*all_mimics(), "all mimics"}
        for row in rows.values():
            for name in thresholds:
                value, low, high = row[name]
                assert 0.0 <= low <= value <= high <= 1.0
    text = mimic_section(found, thresholds)
    assert "Fracture mimics" in text and all(kind in text for kind in all_mimics())
