"""``cds-service evaluate``: generate or load the groups, evaluate each, write the figures and the report."""

from __future__ import annotations

import json
from pathlib import Path

from cds_service.training.dataset import CropSet, all_mimics, from_folder, generate
from cds_service.training.evaluation.controls import shortcut_controls
from cds_service.training.evaluation.figures import (
    plot_false_negatives,
    plot_heatmaps,
    plot_line_visibility,
    plot_reliability,
    plot_roc,
    plot_scores_by_subtype,
)
from cds_service.training.evaluation.groups import (
    PHANTOM_GROUPS,
    GroupResult,
    dataset_name,
    evaluate_group,
    false_negatives,
    stored_thresholds,
)
from cds_service.training.evaluation.markdown import (
    controls_section,
    data_header,
    mimic_section,
    phantom_header,
    planted_section,
    report_page,
    skipped_controls,
)
from cds_service.training.evaluation.mimics import mimic_metrics, mimic_sets
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.evaluation.planted import PLANTED_STUDIES, planted_shortcut, site_dependence
from cds_service.training.evaluation.targets import targets_section
from cds_service.training.evaluation.visibility import VISIBILITY_LABELS, line_visibility
from cds_service.training.phantoms import TRAINING_SITES


def model_generator(fracture: OnnxModel) -> int:
    """The phantom generator the fracture model was trained on (its stored ``train_config``; 1 before
    generator 2 existed): the evaluation renders its phantoms with the same one."""
    try:
        return int(json.loads(fracture.parameters.get("train_config") or "{}").get("generator", 1))
    except (ValueError, TypeError):
        return 1


def _phantom_groups(studies: int, seed: int, size: int, generator: int) -> dict[str, CropSet]:
    return {group.name: group.crops(studies, seed, size, generator=generator) for group in PHANTOM_GROUPS}


def _phantom_controls(
    results: list[GroupResult], studies: int, seed: int, fracture: OnnxModel, resamples: int, generator: int
) -> dict[str, dict]:
    """The shortcut controls on each external phantom group (the baseline trained once, on seed + 2)."""
    size = fracture.info.input_size
    baseline_train = generate(
        max(studies // 2, 30), seed + 2, size, TRAINING_SITES, p_fracture=0.5, progress=False, generator=generator
    )
    controls = {}
    for result, group in zip(results, PHANTOM_GROUPS, strict=True):
        if group.external:
            swapped = group.crops(studies, seed, size, swap_marker=True, generator=generator)
            controls[result.name] = shortcut_controls(result, swapped, baseline_train, fracture, resamples)
    return controls


def evaluate(
    repository: Path,
    output: Path,
    studies: int = 400,
    seed: int = 424242,
    fast: bool = False,
    data: Path | None = None,
) -> dict:
    """Evaluate the exported models on phantoms, or on ``data`` (a folder of DICOM files + ``labels.csv``).

    Writes report.md, metrics.json, roc.png, reliability.png, heatmaps.png, scores_by_subtype.png and
    false_negatives.png into ``output``; returns the metrics.
    """
    if fast:
        studies = min(studies, 60)
    resamples = 200 if fast else 2000
    fracture, garden = OnnxModel.load(repository, "fracture"), OnnxModel.load(repository, "garden")
    size = fracture.info.input_size
    threshold = fracture.info.operating_threshold
    output.mkdir(parents=True, exist_ok=True)
    generator = model_generator(fracture)
    groups = (
        _phantom_groups(studies, seed, size, generator)
        if data is None
        else {dataset_name(data): from_folder(data, size)}
    )
    results = [evaluate_group(name, crops, fracture, garden, resamples) for name, crops in groups.items()]
    metrics: dict = {result.name: result.metrics for result in results}

    if data is None:
        external = [result for result, group in zip(results, PHANTOM_GROUPS, strict=True) if group.external]
        for result, group in zip(results, PHANTOM_GROUPS, strict=True):
            line_free = group.crops(
                studies, seed, size, progress=False, fracture_lines=False, only=VISIBILITY_LABELS, generator=generator
            )
            result.metrics["line_visibility"] = line_visibility(result.data, line_free, result.score, threshold)
        plot_line_visibility(results, output / "line_visibility.png", threshold)
        metrics["controls"] = _phantom_controls(results, studies, seed, fracture, resamples, generator)
        metrics["site_dependence"] = {r.name: site_dependence(r.score, r.data, resamples) for r in results}
        metrics["planted_shortcut"] = planted_shortcut(seed + 5, PLANTED_STUDIES, resamples)
        header = phantom_header(fracture, garden, studies, seed, resamples, fast, generator)
        controls = controls_section(metrics["controls"]) + planted_section(
            metrics["site_dependence"], metrics["planted_shortcut"]
        )
        if generator >= 2:  # the cartoon draws no mimics
            mimic_studies = max(5, studies // (4 * len(all_mimics())))
            metrics["mimics"] = mimic_metrics(mimic_sets(mimic_studies, seed, size), fracture, resamples)
            controls += mimic_section(metrics["mimics"], stored_thresholds(fracture))
        source, missed_in = "synthetic phantoms", "the external sites"
    else:
        external = results
        header = data_header(data, fracture, garden, results[0].data, resamples, fast)
        controls, source, missed_in = skipped_controls(data), dataset_name(data), f"`{dataset_name(data)}`"

    external_sites = [g.sites[0] for g in PHANTOM_GROUPS if g.external] if data is None else [None] * len(external)
    targets = targets_section(external, external_sites, metrics.get("mimics"))
    misses = false_negatives(external, threshold)
    metrics["false_negatives"] = {label: len(found) for label, found in misses.items()}
    plot_roc({result.name: result.roc for result in results}, output / "roc.png", source)
    plot_reliability(results, output / "reliability.png")
    plot_heatmaps(external[0].data, fracture, output / "heatmaps.png", external[0].name)
    plot_false_negatives(misses, output / "false_negatives.png")
    plot_scores_by_subtype(results, output / "scores_by_subtype.png", stored_thresholds(fracture))
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report = report_page(header, results, external, misses, threshold, controls, missed_in, targets)
    (output / "report.md").write_text(report)
    return metrics
