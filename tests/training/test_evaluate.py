"""The evaluation: a fast run of the shipped models on fresh phantoms (as CI runs it), calibration as
served, and ``evaluate --data`` on a labelled DICOM folder with small untrained exports."""

import json

import numpy as np
import pytest

from cds_service.training.phantoms import LABELS
from tests.conftest import IN_CI, require

if not IN_CI:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sklearn")

PNG = b"\x89PNG"


def test_fast_evaluation_writes_a_stard_report(tmp_path):
    from cds_service.inference.triton_server import latest_model_file
    from cds_service.settings import Settings
    from cds_service.training.evaluation import PHANTOM_GROUPS, OnnxModel, evaluate

    repository = Settings().model_repository
    require(latest_model_file(repository, "fracture").exists(), "no exported models")
    metrics = evaluate(repository, tmp_path, studies=10, fast=True)
    report = (tmp_path / "report.md").read_text()
    assert "Internal sites" in report and "External site (" in report and "External site B" in report
    assert "Not for clinical use" in report and "calibration error ≤ 0.03" in report
    for figure in ("roc.png", "reliability.png", "heatmaps.png", "false_negatives.png", "scores_by_subtype.png"):
        assert (tmp_path / figure).read_bytes()[:4] == PNG
        assert f"]({figure})" in report
    saved = json.loads((tmp_path / "metrics.json").read_text())
    has_youden = OnnxModel.load(repository, "fracture").parameter("youden_threshold") is not None
    for group in (group.name for group in PHANTOM_GROUPS):
        assert saved[group]["crops"] == 20
        for key in ("sensitivity", "ece", "localisation_top5_iou_hit"):
            value, low, high = saved[group][key]
            assert np.isnan(value) or low <= value <= high
        assert ("youden" in saved[group]["operating_points"]) == has_youden
        assert sum(saved[group]["reliability"]["counts"]) == 20
        medians = saved[group]["median_score_by_label"]
        assert next(iter(medians)) == "none" and all(0.0 <= value <= 1.0 for value in medians.values())
        assert list(saved[group]["garden_stage_recall"]) == ["I", "II", "III", "IV"]
        for value, low, high in saved[group]["garden_stage_recall"].values():
            assert np.isnan(value) or low <= value <= high
    external = [group.name for group in PHANTOM_GROUPS if group.external]
    assert sorted(metrics["controls"]) == sorted(external) and len(external) == 2
    for control in metrics["controls"].values():
        assert control["marker_swap"]["crops"] == 20
        assert 0.0 <= control["baseline_auc"][0] <= 1.0
        occlusion = control["occlusion"]
        assert occlusion["called"] <= 20
        # The fall of p(fracture) is measured per subtype on exactly the called fractures.
        for key in ("in_box", "off_femur"):
            by_subtype = occlusion[f"drop_{key}_by_subtype"]
            assert set(by_subtype) <= set(LABELS[1:])
            if occlusion["called"]:
                value, low, high = occlusion[f"drop_{key}"]
                assert -1.0 <= low <= value <= high <= 1.0
    assert "median fall of p, fracture blurred" in report
    # The site-dependence control runs on every group and is shown to catch its planted shortcut.
    assert set(metrics["site_dependence"]) == {group.name for group in PHANTOM_GROUPS}
    assert metrics["planted_shortcut"]["caught"]
    assert "A control shown to catch a planted shortcut" in report and "**caught**" in report
    assert "| median p(fracture) | Internal sites" in report
    assert "Occlusion" in report and "Shortcut controls: skipped" not in report
    assert "Garden I staged as I" in report and "Garden recall by stage: I " in report
    # Line visibility: every Garden I/II hip of each group measured against its line-free copy.
    assert "Was the line there to see?" in report and "](line_visibility.png)" in report
    assert (tmp_path / "line_visibility.png").read_bytes()[:4] == PNG
    for group in (group.name for group in PHANTOM_GROUPS):
        seen = saved[group]["line_visibility"]
        for label in ("garden_I", "garden_II"):
            assert len(seen[label]["ccr"]) == len(seen[label]["found"]) == len(seen[label]["score"])
            assert all(value >= 0 for value in seen[label]["ccr"])
        assert sum(b["hips"] for b in seen["garden_I_found_by_ccr"].values()) == len(seen["garden_I"]["ccr"])
    measured = sum(len(saved[group.name]["line_visibility"]["garden_I"]["ccr"]) for group in PHANTOM_GROUPS)
    assert measured > 0  # the seeds give Garden I hips: the section is computed, not empty by construction
    # The targets table: one row per target, a verdict per external group.
    table = report.split("### Targets: met or missed")[1].split("###")[0]
    assert table.count("| AUC ≥ 0.99 |") == 1 and table.count("**") >= 2 * 9 * len(external)


@pytest.fixture(scope="module")
def small_repositories(tmp_path_factory):
    """Two repositories with the same untrained 64-px models: uncalibrated, and with temperature 2 and a
    prior shift of the fracture model (validation 50 % fractured, served for 20 %)."""
    if not IN_CI:
        pytest.importorskip("torch")
        pytest.importorskip("timm")
    import torch

    from cds_service.training.config import FRACTURE_CLASSES, GARDEN_CLASSES
    from cds_service.training.export import ExportMetadata, export_model
    from cds_service.training.model import CamNet, create_backbone

    repositories = []
    for temperature in ("", "2"):
        repository = tmp_path_factory.mktemp("repository")
        for name, classes in (("fracture", FRACTURE_CLASSES), ("garden", GARDEN_CLASSES)):
            torch.manual_seed(3)
            net = CamNet(create_backbone("test_resnet", len(classes))).eval()
            with torch.no_grad():
                net.classifier.weight.normal_(0, 1)  # untrained but decisive: probabilities away from 0.5
            extra = {"temperature": temperature, "youden_threshold": "0.4" if name == "fracture" else ""}
            shifted = bool(temperature) and name == "fracture"
            prior = {"calibration_prevalence": 0.5, "prevalence": 0.2} if shifted else {}
            export_model(net, repository, name, ExportMetadata(classes, "test_resnet", 64, extra=extra, **prior))
        repositories.append(repository)
    return repositories


def test_the_config_temperature_and_prior_shift_are_applied_as_served(small_repositories):
    from cds_service.findings import softmax
    from cds_service.training.evaluation import OnnxModel

    plain, calibrated = (OnnxModel.load(repository, "fracture") for repository in small_repositories)
    assert plain.info.temperature == 1.0 and calibrated.info.temperature == 2.0  # empty parameter → 1
    images = np.random.default_rng(0).integers(0, 255, (6, 64, 64), dtype=np.uint8)
    logits = calibrated.session.run(["logits"], {"image": images[:, None]})[0]
    probabilities, _ = calibrated.run(images)
    shift = np.log(0.2 / 0.8) - np.log(0.5 / 0.5)  # on the fracture logit, after the temperature
    np.testing.assert_allclose(probabilities, softmax(logits / 2 + [0.0, shift]), atol=1e-6)
    uncalibrated, _ = plain.run(images)
    np.testing.assert_allclose(uncalibrated, softmax(logits), atol=1e-6)  # same weights, no temperature
    assert np.abs(np.log(probabilities) - np.log(uncalibrated)).max() > 0.1  # the calibration changed them


def test_evaluate_on_a_labelled_dicom_folder(small_repositories, tmp_path):
    from cds_service.cli import main

    folder, output = tmp_path / "hospital-x", tmp_path / "report"
    assert main(["phantoms", "--output", str(folder), "--count", "6", "--seed", "5", "--sites", "site-c"]) == 0
    argv = ["evaluate", "--data", str(folder), "--repository", str(small_repositories[1]), "--output", str(output)]
    assert main([*argv, "--fast"]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert sorted(metrics) == ["false_negatives", "hospital-x"]  # one group, no phantom controls
    group = metrics["hospital-x"]
    assert group["crops"] == 12 and group["temperature"] == 2.0
    assert group["operating_points"]["youden"]["threshold"] == 0.4
    report = (output / "report.md").read_text()
    assert "### hospital-x" in report and "### Shortcut controls: skipped" in report
    assert "Synthetic data only" not in report and "External site" not in report
    assert "training data `untrained`" in report and "Youden point (`youden_threshold`)" in report
    assert "calibrated for 20 % fractured hips (`prevalence`)" in report and "shifted by -1.386 log-odds" in report
    for figure in ("roc.png", "reliability.png", "heatmaps.png", "false_negatives.png"):
        assert (output / figure).read_bytes()[:4] == PNG


def test_the_off_femur_occlusion_box_avoids_the_femur_and_seeks_the_largest_change():
    from cds_service.training.evaluation.controls import off_target_box, paste

    change = np.zeros((20, 20))
    change[0:4, 0:4] = 10.0  # the biggest change, but on the (avoided) femur
    change[15:19, 12:16] = 5.0
    assert off_target_box(change, 4, 4, [(0, 0, 6, 6)]) == (12, 15, 16, 19)
    assert off_target_box(change, 4, 4, []) == (0, 0, 4, 4)
    assert off_target_box(change, 4, 4, [(0, 0, 20, 17)]) is None  # nowhere left for a 4-high box
    image, fill = np.zeros((20, 20), np.uint8), np.full((20, 20), 9, np.uint8)
    pasted = paste(image, fill, (12, 15, 16, 19))
    assert pasted.sum() == 9 * 16 and pasted[15:19, 12:16].min() == 9


def test_an_external_site_is_evaluated_on_its_fixed_profile_and_internal_sites_on_drawn_acquisitions():
    """The report describes each external site by its one profile (e.g. 16-bit, gamma curve): its test
    set must not draw per-study acquisitions (bit depth, curve, noise) the way training data does."""
    from cds_service.training.dataset import generate
    from cds_service.training.evaluation import PHANTOM_GROUPS

    internal, external = PHANTOM_GROUPS[0], PHANTOM_GROUPS[1]
    seed, size = 11, 48
    crops = external.crops(3, seed, size, progress=False)
    fixed = generate(3, seed + external.seed_offset, size, external.sites, p_fracture=0.5, progress=False, vary=False)
    drawn = generate(3, seed + external.seed_offset, size, external.sites, p_fracture=0.5, progress=False, vary=True)
    np.testing.assert_array_equal(crops.images, fixed.images)
    assert not np.array_equal(crops.images, drawn.images)  # the data can tell the two apart
    inner = internal.crops(3, seed, size, progress=False)
    np.testing.assert_array_equal(
        inner.images, generate(3, seed, size, internal.sites, p_fracture=0.5, progress=False, vary=True).images
    )
