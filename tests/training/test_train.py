"""Training end to end on tiny data: calibration and operating points reach the exported config,
phantom sets are reused only while unchanged, and Study A's EfficientNet-B4 at 380 still trains."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.conftest import IN_CI

if not IN_CI:  # the [train] extra is optional on a developer machine; CI installs it and must run these
    pytest.importorskip("torch")
    pytest.importorskip("timm")

from cds_service.inference.triton_server import latest_model_file, model_versions, read_model_config
from cds_service.training.config import TrainConfig
from cds_service.training.train import export_checkpoints, phantom_fingerprint, train_all

TINY = TrainConfig(
    backbone="test_resnet",
    output_stride=32,
    input_size=96,
    train_studies=12,
    val_studies=12,
    fracture_epochs=1,
    garden_epochs=1,
    batch_size=8,
    threads=1,
)


def _learned_weights_kept(start: dict, tuned: dict) -> list[str]:
    """Names of the learned weights (floating point, not BatchNorm running statistics) of ``start``,
    after checking that ``tuned`` still holds each of them (a learning rate too small to move them)."""
    import torch

    names = [name for name, value in start.items() if value.dtype.is_floating_point and "running" not in name]
    assert all(torch.allclose(tuned[name], start[name], atol=1e-6) for name in names)
    return names


def _parameters(repository, name: str) -> dict[str, str]:
    config = read_model_config(repository / name / "config.pbtxt")
    return {key: value.string_value for key, value in config.parameters.items()}


def test_export_carries_temperature_and_both_operating_points(tmp_path):
    summary = train_all(TINY, tmp_path / "repo", tmp_path / "work")
    fracture = _parameters(tmp_path / "repo", "fracture")
    garden = _parameters(tmp_path / "repo", "garden")
    assert float(fracture["temperature"]) == pytest.approx(summary["fracture"]["temperature"], rel=1e-5)
    assert float(garden["temperature"]) == pytest.approx(summary["garden"]["temperature"], rel=1e-5)
    assert float(fracture["temperature"]) != 1.0  # fitted, not the default
    # The operating point reaches the published sensitivity on validation by construction.
    assert float(fracture["sensitivity"]) >= 0.952
    assert float(fracture["operating_threshold"]) == pytest.approx(summary["fracture"]["threshold"], abs=1e-6)
    assert 0 < float(fracture["youden_threshold"]) < 1 and "youden_specificity" in fracture
    assert summary["fracture"]["val_nll_after"] <= summary["fracture"]["val_nll_before"] + 1e-9
    assert json.loads(fracture["train_config"])["input_size"] == 96
    # No --prevalence: the probabilities stay at the validation's own share (no prior shift).
    assert float(fracture["calibration_prevalence"]) == pytest.approx(summary["fracture"]["calibration_prevalence"])
    assert float(fracture["prevalence"]) == pytest.approx(float(fracture["calibration_prevalence"]), abs=1e-6)
    assert garden["prevalence"] == "" and garden["calibration_prevalence"] == ""

    # --export-only --prevalence: the thresholds move to the shifted scale, the operating point does not.
    lower = export_checkpoints(dataclasses.replace(TINY, prevalence=0.1), tmp_path / "repo", tmp_path / "work")
    shifted = _parameters(tmp_path / "repo", "fracture")
    assert float(shifted["prevalence"]) == pytest.approx(0.1)
    assert lower["fracture"]["val_sensitivity"] == summary["fracture"]["val_sensitivity"]
    assert lower["fracture"]["val_specificity"] == summary["fracture"]["val_specificity"]
    assert summary["fracture"]["calibration_prevalence"] > 0.1  # the phantoms have 45 %: the threshold drops
    assert float(shifted["operating_threshold"]) < float(fracture["operating_threshold"])


def test_phantom_sets_are_reused_only_while_unchanged(tmp_path, capsys):
    from cds_service.training.train import _cached

    first = _cached(tmp_path / "val.npz", 4, 11, 64)
    assert "reusing" not in capsys.readouterr().out
    again = _cached(tmp_path / "val.npz", 4, 11, 64)
    assert "reusing" in capsys.readouterr().out
    assert (again.images == first.images).all()
    assert phantom_fingerprint(4, 11, 64) != phantom_fingerprint(4, 12, 64)
    (tmp_path / "val.fingerprint").write_text("stale")  # e.g. the phantom code changed
    _cached(tmp_path / "val.npz", 4, 11, 64)
    assert "reusing" not in capsys.readouterr().out


def test_a_cached_set_grows_to_more_studies_exactly_as_a_full_run_draws_them(tmp_path, capsys):
    from cds_service.training.train import _cached

    _cached(tmp_path / "small.npz", 3, 11, 64)
    (tmp_path / "small.npz").rename(tmp_path / "grown.npz")
    (tmp_path / "small.fingerprint").rename(tmp_path / "grown.fingerprint")
    capsys.readouterr()
    grown = _cached(tmp_path / "grown.npz", 5, 11, 64)
    assert "growing" in capsys.readouterr().out
    full = _cached(tmp_path / "full.npz", 5, 11, 64)
    assert (grown.images == full.images).all() and (grown.label == full.label).all()
    assert grown.study.tolist() == full.study.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert _cached(tmp_path / "grown.npz", 5, 11, 64) is not None and "reusing" in capsys.readouterr().out
    (tmp_path / "grown.fingerprint").write_text("stale")  # made by other code: redrawn, not grown
    _cached(tmp_path / "grown.npz", 6, 11, 64)
    assert "growing" not in capsys.readouterr().out


def test_study_a_efficientnet_b4_at_380_is_one_flag_away(tmp_path):
    """A smoke run, not a model: a few steps of B4 at 380 with a stride-16 heat map, exported."""
    config = dataclasses.replace(
        TINY, backbone="efficientnet_b4", input_size=380, output_stride=16, train_studies=4, val_studies=8
    )
    train_all(config, tmp_path / "repo", tmp_path / "work")
    model = read_model_config(tmp_path / "repo" / "fracture" / "config.pbtxt")
    cam = next(output for output in model.output if output.name == "cam")
    assert list(cam.dims) == [2, 24, 24]  # 380 / 16, rounded up
    assert _parameters(tmp_path / "repo", "fracture")["architecture"] == "efficientnet_b4"


def test_garden_epochs_0_retrains_the_fracture_model_and_keeps_the_garden_model(tmp_path):
    """A new fracture backbone can ship beside a Garden model trained by an earlier run."""
    train_all(TINY, tmp_path / "repo", tmp_path / "first")
    garden_before = latest_model_file(tmp_path / "repo", "garden").read_bytes()
    fracture_before = latest_model_file(tmp_path / "repo", "fracture").read_bytes()
    config = dataclasses.replace(TINY, backbone="tinynet_e", garden_epochs=0, cam_box_weight=0.2)  # guided too
    summary = train_all(config, tmp_path / "repo", tmp_path / "second")
    assert latest_model_file(tmp_path / "repo", "garden").read_bytes() == garden_before
    assert latest_model_file(tmp_path / "repo", "fracture").read_bytes() != fracture_before
    # New weights are a new served version (the result store is keyed by it); the old folder goes.
    assert model_versions(tmp_path / "repo", "fracture") == [2]
    assert model_versions(tmp_path / "repo", "garden") == [1]
    assert 0 <= summary["history"]["fracture"][-1]["val_localisation"] <= 1  # the pointing game, per epoch
    assert _parameters(tmp_path / "repo", "fracture")["architecture"] == "tinynet_e"
    assert _parameters(tmp_path / "repo", "garden")["architecture"] == "test_resnet"
    assert summary["garden"] == {"kept": str(tmp_path / "repo" / "garden")}
    assert not (tmp_path / "second" / "garden.pt").exists()


def test_fracture_epochs_0_retrains_the_garden_model_and_keeps_the_fracture_model(tmp_path):
    train_all(TINY, tmp_path / "repo", tmp_path / "first")
    fracture_before = latest_model_file(tmp_path / "repo", "fracture").read_bytes()
    garden_before = latest_model_file(tmp_path / "repo", "garden").read_bytes()
    config = dataclasses.replace(TINY, fracture_epochs=0, seed=TINY.seed + 1)
    summary = train_all(config, tmp_path / "repo", tmp_path / "second")
    again = train_all(config, tmp_path / "repo", tmp_path / "first")  # the first run's work folder
    assert len(again["history"]["fracture"]) == 1  # the fracture model's history is kept beside the new Garden's
    assert latest_model_file(tmp_path / "repo", "fracture").read_bytes() == fracture_before
    assert latest_model_file(tmp_path / "repo", "garden").read_bytes() != garden_before
    assert summary["fracture"] == {"kept": str(tmp_path / "repo" / "fracture")}
    assert 0 <= summary["garden"]["val_accuracy"] <= 1
    assert not (tmp_path / "second" / "fracture.pt").exists()


def test_the_garden_model_can_start_from_the_fracture_models_features(tmp_path):
    """`--garden-init fracture`: the Garden backbone starts as the fracture model's (at a learning
    rate too small to move it, the trained Garden weights still equal the fracture model's)."""
    import torch

    train_all(TINY, tmp_path / "repo", tmp_path / "work")
    fracture = torch.load(tmp_path / "work" / "fracture.pt", weights_only=True)
    config = dataclasses.replace(TINY, fracture_epochs=0, learning_rate=1e-12, garden_init="fracture")
    summary = train_all(config, tmp_path / "repo", tmp_path / "work")
    garden = torch.load(tmp_path / "work" / "garden.pt", weights_only=True)
    convolutions = [name for name, value in fracture.items() if value.ndim == 4]
    assert convolutions and all(torch.allclose(garden[name], fracture[name], atol=1e-6) for name in convolutions)
    assert garden["classifier.weight"].shape[0] == 4
    assert json.loads(_parameters(tmp_path / "repo", "garden")["train_config"])["garden_init"] == "fracture"
    assert 0 <= summary["garden"]["val_accuracy"] <= 1
    with pytest.raises(FileNotFoundError, match="garden-init"):
        train_all(config, tmp_path / "repo", tmp_path / "empty")


def test_the_fracture_model_can_continue_from_a_checkpoint(tmp_path):
    """`--fracture-init CHECKPOINT`: a fine-tune starts from the checkpoint's weights, classifier included."""
    import torch

    train_all(dataclasses.replace(TINY, garden_epochs=0), tmp_path / "repo", tmp_path / "first")
    start = torch.load(tmp_path / "first" / "fracture.pt", weights_only=True)
    config = dataclasses.replace(
        TINY, garden_epochs=0, learning_rate=1e-12, fracture_init=str(tmp_path / "first" / "fracture.pt")
    )
    train_all(config, tmp_path / "repo", tmp_path / "second")
    tuned = torch.load(tmp_path / "second" / "fracture.pt", weights_only=True)
    assert "classifier.weight" in _learned_weights_kept(start, tuned)


def test_a_larger_input_continues_both_models_in_the_same_work_folder(tmp_path):
    """The shipped recipe's last stage (progressive resizing): both models trained at one size continue
    at a larger one (`--fracture-init fracture --garden-init garden`) in the same work folder. Each size
    keeps its own crop cache, the exported models take the new size, and the history runs on from the
    first stage's epochs instead of replacing them."""
    import torch

    work = tmp_path / "work"
    train_all(dataclasses.replace(TINY, garden_init="fracture"), tmp_path / "repo", work)
    first = {name: torch.load(work / f"{name}.pt", weights_only=True) for name in ("fracture", "garden")}
    larger = dataclasses.replace(
        TINY, input_size=128, learning_rate=1e-12, fracture_init="fracture", garden_init="garden", zero_init_head=True
    )
    train_all(larger, tmp_path / "repo", work)

    assert {path.name for path in work.glob("*.npz")} == {"train-96.npz", "val-96.npz", "train-128.npz", "val-128.npz"}
    for name, start in first.items():
        tuned = torch.load(work / f"{name}.pt", weights_only=True)
        # The classifiers too (a fine-tune, not new features), and zero_init_head leaves a loaded one alone.
        assert "classifier.weight" in _learned_weights_kept(start, tuned)
        assert _parameters(tmp_path / "repo", name)["input_size"] == "128"
    history = json.loads((work / "history.json").read_text())
    assert [record["input_size"] for record in history["fracture"]] == [96, 128]
    assert [record["input_size"] for record in history["garden"]] == [96, 128]


def test_a_fresh_work_folder_continues_the_served_models(tmp_path):
    """`--fracture-init repository --garden-init repository`: without the work folder that trained them
    (a fresh clone), both models continue from the ONNX files served from the repository, rebuilt
    with the same outputs; a run at another input size is refused before it trains."""
    import numpy as np
    import torch

    from cds_service.training.dataset import CropSet
    from cds_service.training.model import CamNet, create_backbone
    from cds_service.training.train import crop_cache, predict_logits

    repo, first, fresh = tmp_path / "repo", tmp_path / "first", tmp_path / "fresh"
    train_all(TINY, repo, first)
    config = dataclasses.replace(TINY, learning_rate=1e-12, fracture_init="repository", garden_init="repository")
    train_all(config, repo, fresh)

    val = CropSet.load(crop_cache(first, "val", TINY.input_size)).images
    for name, classes in (("fracture", 2), ("garden", 4)):
        rebuilt = torch.load(fresh / f"{name}-from-repository.pt", weights_only=True)
        outputs = []
        for state in (torch.load(first / f"{name}.pt", weights_only=True), rebuilt):
            net = CamNet(create_backbone(TINY.backbone, classes, TINY.output_stride))
            net.load_state_dict(state)
            outputs.append(predict_logits(net, val))
        for trained, from_onnx in zip(*outputs, strict=True):
            np.testing.assert_allclose(from_onnx, trained, atol=1e-4 * np.abs(trained).max())
        assert "classifier.weight" in _learned_weights_kept(
            rebuilt, torch.load(fresh / f"{name}.pt", weights_only=True)
        )
        assert model_versions(repo, name) == [2]
    with pytest.raises(ValueError, match="takes 96 px crops, this run 128"):
        train_all(dataclasses.replace(config, input_size=128), repo, tmp_path / "larger")


def test_a_site_aware_fracture_model_trains_exports_and_is_read_as_the_service_reads_it(tmp_path):
    """--fracture-sites: three classes (none / femoral neck / trochanteric) end to end: the export keeps
    the contract the service accepts, calibrates p(fracture) = 1 − p(none), and the service's reader
    derives p(fracture), the fracture map and a site from it."""
    import numpy as np

    from cds_service.findings import fracture_site, site_aware
    from cds_service.inference.client import ACCEPTED_CLASSES
    from cds_service.training.config import FRACTURE_SITE_CLASSES
    from cds_service.training.dataset import CropSet
    from cds_service.training.evaluation.onnx_model import OnnxModel

    config = dataclasses.replace(TINY, fracture_sites=True, garden_epochs=0)
    summary = train_all(config, tmp_path / "repo", tmp_path / "work")
    parameters = _parameters(tmp_path / "repo", "fracture")
    assert tuple(parameters["class_names"].split(",")) == FRACTURE_SITE_CLASSES
    assert FRACTURE_SITE_CLASSES in ACCEPTED_CLASSES["fracture"]
    assert float(parameters["sensitivity"]) >= 0.952  # chosen on p(fracture) = 1 − p(none)
    assert 0.0 <= summary["fracture"]["val_site_accuracy"] <= 1.0
    model = OnnxModel.load(tmp_path / "repo", "fracture")
    assert site_aware(model.info)
    images = CropSet.load(tmp_path / "work" / "val-96.npz").images
    p, maps = model.fracture(images)
    probs, _ = model.run(images)
    np.testing.assert_allclose(p, 1 - probs[:, 0], atol=1e-9)
    assert maps.shape[0] == len(images) and maps.ndim == 3
    assert {fracture_site(row, model.info) for row in probs} <= {"femoral_neck", "trochanteric", "uncertain"}
