"""A fast evaluation of the shipped (exported) models on a small fresh phantom set, as CI runs it."""

import json

import pytest

from tests.conftest import IN_CI, require

if not IN_CI:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sklearn")


def test_fast_evaluation_writes_a_stard_report(tmp_path):
    from cds_service.settings import Settings
    from cds_service.training.evaluate import evaluate

    repository = Settings().model_repository
    require((repository / "fracture" / "1" / "model.onnx").exists(), "no exported models")
    metrics = evaluate(repository, tmp_path, studies=10, fast=True)
    report = (tmp_path / "report.md").read_text()
    assert "Internal sites" in report and "External site" in report and "Not for clinical use" in report
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for group in ("Internal sites (held out: new seed)", "External site (never used in training)"):
        value, low, high = saved[group]["sensitivity"]
        assert low <= value <= high
        assert saved[group]["crops"] == 20
    assert metrics["marker_swap"]["crops"] == 20
    assert 0.0 <= metrics["baseline_auc_external"][0] <= 1.0
