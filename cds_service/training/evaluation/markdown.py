"""The Markdown of the STARD-style report: headers, one section per group, controls, the whole page."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cds_service.domain import ModelInfo
from cds_service.training.dataset import CropSet
from cds_service.training.evaluation.controls import BLUR_FRACTION
from cds_service.training.evaluation.groups import (
    CALIBRATION_BINS,
    GARDEN_STAGES,
    PHANTOM_GROUPS,
    GroupResult,
    dataset_name,
)
from cds_service.training.evaluation.localisation import IOU_HIT, TOP_FRACTION
from cds_service.training.evaluation.mimics import MIMIC_TARGET
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.evaluation.planted import FLAG_MARGIN, PLANTED_SITES
from cds_service.training.evaluation.visibility import CCR_BINS, CLUTTER_SIGMA, VISIBILITY_LABELS
from cds_service.training.phantoms import LABELS, SITES, TRAINING_SITES

PUBLISHED = {"auc": 0.99, "sensitivity": 0.952, "specificity": 0.969, "garden_accuracy": 0.9334, "localisation": 0.95}
ECE_TARGET = 0.03  # issue 12's target; the seed studies publish no calibration figure
SUBTLE = ("garden_I", "garden_II", "ao_A1")  # undisplaced / slightly displaced: Study A's usual misses


def fmt(triple: tuple[float, float, float] | list[float], pct: bool = True) -> str:
    value, low, high = triple
    if np.isnan(value):
        return "n/a (none in the set)"
    if pct:
        return f"{100 * value:.1f} % ({100 * low:.1f}–{100 * high:.1f})"
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def _pixels(triple: tuple[float, float, float] | list[float]) -> str:
    value, low, high = triple
    return "n/a (none in the set)" if np.isnan(value) else f"{value:.1f} ({low:.1f}–{high:.1f})"


def miss_summary(misses: dict[str, list[tuple]], fractures: int, threshold: float) -> str:
    missed = sum(len(found) for found in misses.values())
    if not missed:
        return f"No fracture among the {fractures} was missed at the operating threshold."
    by_type = ", ".join(f"{label} {len(found)}" for label, found in misses.items() if found)
    subtle = sum(len(misses[label]) for label in SUBTLE)
    median = float(np.median([miss[2] for found in misses.values() for miss in found]))
    return (
        f"{missed} of {fractures} fractures missed ({by_type}). {subtle} of the {missed} are the undisplaced or"
        f" slightly displaced kinds (Garden I–II, AO 31-A1) that Study A also names among its misses; the"
        f" median p(fracture) of the misses is {median:.2f} against the threshold {threshold:.3f}."
    )


def confusion(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> str:
    lines = ["| truth \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, name in enumerate(names):
        counts = [int(((truth == i) & (predicted == j)).sum()) for j in range(len(names))]
        lines.append(f"| {name} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


def operating_table(points: dict[str, dict]) -> str:
    rows = {
        "operating": ("stored operating point (`operating_threshold`)", "95.2 % / 96.9 % (Study A)"),
        "youden": ("Youden point (`youden_threshold`)", "–"),
        "high_specificity": (
            "high-specificity point (the card's `warning`/`critical` tiers; below it `info`)",
            "specificity ≥ 96.9 % (Study A)",
        ),
    }
    lines = ["| operating point | threshold | sensitivity (95 % CI) | specificity (95 % CI) | published |"]
    lines.append("|---|---|---|---|---|")
    for key, point in points.items():
        label, published = rows[key]
        sensitivity, specificity = fmt(point["sensitivity"]), fmt(point["specificity"])
        lines.append(f"| {label} | {point['threshold']:.3f} | {sensitivity} | {specificity} | {published} |")
    return "\n".join(lines)


def site_rows(metrics: dict) -> str:
    """Table rows for the fracture site and Garden as the card shows it (n/a for a two-class model)."""
    if not metrics.get("site_aware"):
        na = "n/a: the fracture model names no site, so the card stages no hip"
        return (
            f"| fracture-site accuracy (called fractures) | {na} | – (target ≥ 95 %) |\n| Garden as shown | {na} | – |"
        )
    return (
        f"| fracture-site accuracy (called fractures; neck vs trochanteric) | {fmt(metrics['fracture_site_accuracy'])}"
        " | – (target ≥ 95 %) |\n"
        f"| site named uncertain (called fractures) | {fmt(metrics['fracture_site_uncertain'])} | – |\n"
        f"| Garden 4-class accuracy as the card shows it (hips it stages: called femoral-neck fractures at or "
        f"above the high-specificity point; "
        f"{metrics['garden_as_shown_not_neck']} of them are not) | {fmt(metrics['garden_as_shown_accuracy'])} | – |"
    )


def group_section(result: GroupResult) -> str:
    """The Markdown section of one evaluated group: the metric table, operating points, confusion matrices."""
    metrics, data = result.metrics, result.data
    threshold, temperature = metrics["threshold"], metrics["temperature"]
    truth = data.fractured
    loc_pos = fmt(metrics["localisation_fracture"])
    loc_neg = (
        "n/a (proximal femur not annotated)" if result.femur_unknown else fmt(metrics["localisation_non_fracture"])
    )
    region = {"mask": "its own projected region, trochanters included", "box": "a box"}[
        metrics.get("localisation_femur_region", "box")
    ]
    top = f"{100 * TOP_FRACTION:g} %"
    hit, mean_iou = fmt(metrics["localisation_top5_iou_hit"]), fmt(metrics["localisation_top5_iou_mean"], pct=False)
    calibration = fmt(metrics["ece"], pct=False)
    distance, size = _pixels(metrics["localisation_distance_median_px"]), data.images.shape[-1]
    ceiling = f"{metrics['localisation_top5_iou_ceiling']:.2f} for these boxes"
    subtype = metrics["subtype_sensitivity"]
    located = ", ".join(f"{k} {fmt(v)}" for k, v in metrics["localisation_fracture_by_subtype"].items()) or "–"
    predicted = (result.score >= threshold).astype(int)
    garden4, necks = fmt(metrics["garden_4class_accuracy"]), len(result.garden_truth)
    return f"""### {result.name}

{len(data)} hip crops ({int(truth.sum())} fractured); threshold {threshold:.3f}; temperature {temperature:g}.

| metric | value (95 % CI) | published |
|---|---|---|
| accuracy | {fmt(metrics["accuracy"])} | 96.1 % (94.9–97.3) |
| sensitivity | {fmt(metrics["sensitivity"])} | 95.2 % |
| specificity | {fmt(metrics["specificity"])} | 96.9 % |
| F1 | {fmt(metrics["f1"], pct=False)} | 0.961 |
| AUC | {fmt(metrics["auc"], pct=False)} | 0.99 |
| expected calibration error ({CALIBRATION_BINS} bins of p(fracture)) | {calibration} | – (target ≤ {ECE_TARGET}) |
| heat-map localisation, fractures (hottest point in the fracture box) | {loc_pos} | 100 % (20/20) |
| heat-map localisation, non-fractures (hottest point off the proximal femur: {region}) | {loc_neg} | 95 % (19/20) |
| stricter: top-{top} region IoU with the fracture box ≥ {IOU_HIT} (fractures) | {hit} | – |
| mean IoU of the top-{top} region with the fracture box (fractures; at best {ceiling}) | {mean_iou} | – |
| median distance of the hottest point from the fracture box's centre (px of the {size}-px crop) | {distance} | – |
| Garden 4-class accuracy (femoral-neck fractures, n = {necks}) | {garden4} | 93.34 % (Study B, CV) |
| Garden I staged as I (recall of stage I) | {fmt(metrics["garden_stage_recall"]["I"])} | – (target ≥ 80 %) |
| Garden I–II vs III–IV accuracy | {fmt(metrics["garden_displaced_accuracy"])} | – |
{site_rows(metrics)}

{operating_table(metrics["operating_points"])}

Sensitivity by subtype: {", ".join(f"{k} {fmt(v)}" for k, v in subtype.items())}.

Heat-map localisation on fractures by subtype (hottest point in the fracture box): {located}.

Fracture confusion matrix:

{confusion(truth.astype(int), predicted, ["no fracture", "fracture"])}

Garden confusion matrix (femoral-neck fractures):

{confusion(result.garden_truth, result.garden_predicted, list(GARDEN_STAGES))}

Garden recall by stage: {", ".join(f"{stage} {fmt(v)}" for stage, v in metrics["garden_stage_recall"].items())}.
"""


def describe_site(name: str) -> str:
    from pydicom.uid import UID

    site = SITES[name]
    parts = [f"{site.columns}×{site.rows}", f"{site.bits}-bit", site.photometric, f"{site.curve} curve"]
    if site.sharpen:
        parts.append("vendor edge enhancement (unsharp mask)")
    if site.compressed:
        parts.append(UID(site.transfer_syntax).name)
    return f"`{name}` ({', '.join(parts)})"


def validation(sensitivity: float | None, specificity: float | None) -> str:
    if sensitivity is None or specificity is None:
        return ""
    return f" (validation sensitivity {100 * sensitivity:.1f} %, specificity {100 * specificity:.1f} %)"


def prior_text(info: ModelInfo) -> str:
    """The fracture model's prior shift in words, or "" when it stores none."""
    if not info.prior_shift or info.prevalence is None or info.calibration_prevalence is None:
        return ""
    return f"""
  Prior shift: p(fracture) is calibrated for {100 * info.prevalence:.0f} % fractured hips (`prevalence`), the
  validation data had {100 * info.calibration_prevalence:.1f} % (`calibration_prevalence`): the fracture logit
  is shifted by {info.prior_shift:+.3f} log-odds after the temperature (Bayes' rule), and the thresholds
  below are on that scale."""


def models_line(fracture: OnnxModel, garden: OnnxModel) -> str:
    info = fracture.info
    youden = fracture.parameter("youden_threshold")
    youden_text = (
        f"the Youden point `youden_threshold` = {youden:.3f} (maximal sensitivity + specificity − 1 on validation)"
        + validation(fracture.parameter("youden_sensitivity"), fracture.parameter("youden_specificity"))
        + " beside it"
        if youden is not None
        else "this model stores no `youden_threshold`, so the Youden row is left out"
    )
    size = f"{info.input_size}×{info.input_size}"
    networks = (
        f"`fracture` and `garden`, {info.architecture}"
        if garden.info.architecture == info.architecture
        else f"`fracture` {info.architecture} and `garden` {garden.info.architecture}"
    )
    prior = prior_text(info)
    high = info.high_specificity_point
    at_high = validation(
        fracture.parameter("high_specificity_sensitivity"), fracture.parameter("high_specificity_specificity")
    )
    high_text = (
        f"; the high-specificity point `high_specificity_threshold` = {high:.3f}"
        + at_high
        + ", the only one that raises a `warning` or `critical` card (between the two, a low-suspicion `info`"
        " card with no site and no Garden stage)"
        if high is not None
        else ""
    )
    return f"""- Models: {networks} at {size}, training data `{info.training_data}`.
  Calibration temperature (`temperature` in `config.pbtxt`; 1 = uncalibrated) {info.temperature:g} (fracture)
  and {garden.info.temperature:g} (Garden): logits are divided by it before the softmax, as the service does.{prior}
- Index test: the exported ONNX graphs (onnxruntime), at the stored operating threshold `operating_threshold`
  = {info.operating_threshold:.3f}, chosen on validation data{validation(info.sensitivity, info.specificity)};
  {youden_text}{high_text}."""


def method_lines(resamples: int) -> str:
    top = f"{100 * TOP_FRACTION:g} %"
    return f"""- Intervals: the two hips of a study are not independent, so every figure over all hips (accuracy,
  sensitivity, specificity, F1, AUC, ECE, localisation of non-fractures, operating points) has a
  **study-clustered** percentile bootstrap interval ({resamples} resamples of whole studies); figures over
  fractured hips only (at most one per study) keep Wilson score intervals; mean IoU a percentile bootstrap.
- Calibration: ECE over {CALIBRATION_BINS} equal-width bins of the calibrated p(fracture).
- Localisation: Study A's criterion (the hottest point of the fracture-class map, upsampled bilinearly to the
  crop, inside the fracture box: a pointing game) and a stricter one: the IoU of the map's hottest {top} of
  the crop's pixels (k = {top} of the crop area) with the fracture box, as mean IoU and as the fraction of
  fractures with IoU ≥ {IOU_HIT}."""


GENERATOR_TEXT = {
    1: "phantoms version 1 (the 2-D cartoon, `training/phantoms/cartoon.py`)",
    2: "phantoms version 2 (AP pelvis radiographs rendered from 3-D anatomy through the physics of the exposure, "
    "`training/phantoms/radiograph.py`; a fracture mimic on 35 % of studies)",
}


def phantom_header(
    fracture: OnnxModel, garden: OnnxModel, studies: int, seed: int, resamples: int, fast: bool, generator: int = 1
) -> str:
    external = " and ".join(
        f"{describe_site(site)} (seed {seed + group.seed_offset})"
        for group in PHANTOM_GROUPS
        if group.external
        for site in group.sites
    )
    return f"""# Evaluation of the shipped models (STARD 2015 style)

> **Synthetic data only.** Models and test sets are phantoms generated by `cds_service.training.phantoms`;
> these figures say how well the pipeline learns *this synthetic task*, nothing about real radiographs.
> Not for clinical use.

{models_line(fracture, garden)}
- Test sets: {GENERATOR_TEXT.get(generator, f"phantoms version {generator}")}, the generator the fracture
  model was trained on, freshly generated with seed {seed} (internal sites {", ".join(TRAINING_SITES)}, each study's
  acquisition drawn around its site's profile as in training: detector size, bit depth, curve, noise) and,
  each reported as its own group, the external sites never used in training, every study stored with the
  site's one fixed profile: {external}; half the studies with one fractured hip; every crop made by the
  serving preprocessing (decode → LUT → split → resize).
- Reference standard: the generator's ground truth per hip (label, fracture box), known before the index
  test runs (no blinding issue; no indeterminate results).
- Flow: {studies} studies per group, two hips each; none excluded (every file decoded and split), all analysed.
{method_lines(resamples)}
- Reproduce: `cds-service train`, then `cds-service evaluate{" --fast" if fast else ""}` for this report.
"""


def data_header(folder: Path, fracture: OnnxModel, garden: OnnxModel, data: CropSet, resamples: int, fast: bool) -> str:
    with (folder / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    files = len({row["file"] for row in rows})
    described = "; ".join(
        f"`{model.name}`: training data `{model.info.training_data}`"
        + (f" — “{model.info.disclaimer}”" if model.info.disclaimer else "")
        for model in (fracture, garden)
    )
    return f"""# Evaluation of the shipped models on `{dataset_name(folder)}` (STARD 2015 style)

> The models describe themselves as: {described}.

{models_line(fracture, garden)}
- Test set: `{folder}`: `labels.csv` lists {len(rows)} hips in {files} DICOM files; {len(data)} hip crops
  analysed ({int(data.fractured.sum())} fractured). A hip is left out only when the loader cannot use it
  (an unreadable file, or a header without the laterality that matches the row to its crop).
- Reference standard: the labels supplied in `labels.csv` (label per hip, fracture box where given).
{method_lines(resamples)}
- Reproduce: `cds-service evaluate --data {folder}{" --fast" if fast else ""}`.
"""


def _drop(value: list[float] | None) -> str:
    """A median fall of p(fracture) with its interval, in probability points ("–" when not measured)."""
    if value is None or np.isnan(value[0]):
        return "–"
    return f"{value[0]:.2f} ({value[1]:.2f}–{value[2]:.2f})"


def controls_section(controls: dict[str, dict]) -> str:
    lines = ["### Is the task trivial? Three shortcut controls", ""]
    for name, control in controls.items():
        swap, occlusion = control["marker_swap"], control["occlusion"]
        lines += [
            f"**{name}**",
            "",
            "- **Global-statistics baseline** (32-bin intensity histogram + logistic regression, trained on other"
            f" phantoms): AUC {fmt(control['baseline_auc'], pct=False)} (should stay well below the model and"
            " under 0.75).",
            "- **Laterality-marker swap**: the same studies re-rendered with the other marker letter burned in:"
            f" {swap['calls_changed']} of {swap['crops']} calls changed, mean |Δp| = {swap['mean_abs_delta']:.4f}.",
            f"- **Occlusion** (on the {occlusion['called']} correctly called fractures): fracture box replaced by a"
            f" blurred copy of the crop → p(fracture) falls by a median {_drop(occlusion['drop_in_box'])}"
            f" ({fmt(occlusion['flipped_in_box'])} of calls flip below the threshold); the same-size box blurred"
            f" off the proximal femur → falls by {_drop(occlusion['drop_off_femur'])}"
            f" ({fmt(occlusion['flipped_off_femur'])} flip).",
            "",
            "  | subtype | median fall of p, fracture blurred (95 % CI) | off the femur blurred (95 % CI) |",
            "  |---|---|---|",
            *(
                f"  | {label} | {_drop(drop)} | {_drop(occlusion['drop_off_femur_by_subtype'].get(label))} |"
                for label, drop in occlusion["drop_in_box_by_subtype"].items()
            ),
            "",
        ]
    lines.append(
        f"Occlusion: Gaussian blur with σ = 1/{round(1 / BLUR_FRACTION)} of the crop side, wider than any fracture"
        " line; the off-femur box is placed where the blur changes the crop most, so it never just blurs empty"
        " background. The measure is how far p(fracture) falls, not how many calls cross the (low, sensitive)"
        " threshold: a model that reads the fracture loses most of its confidence with the fracture box blurred"
        " and little with the off-femur box blurred. Similar falls (overlapping CIs) would indicate a shortcut"
        " (the call rests on something outside the fracture), and large falls off the femur a model that hinges"
        " on any local change. Displaced fractures keep their displaced fragments around a blurred line, so the"
        " fall need not reach the whole p."
    )
    return "\n".join(lines) + "\n"


def mimic_section(mimics: dict[str, dict], thresholds: dict[str, float]) -> str:
    """False positives on normal hips carrying one fracture mimic, per external site and mimic."""
    names = {"operating": "operating point", "youden": "Youden point", "high_specificity": "card's point"}
    columns = [name for name in ("operating", "high_specificity", "youden") if name in thresholds]
    lines = [
        "### Fracture mimics: normal hips that carry a line or lucency",
        "",
        "Every hip of these studies is normal and carries one mimic (drawn in 3-D before projection); each call"
        " is a false positive. Target: at most"
        f" {100 * MIMIC_TARGET:.0f} % at the card's operating point. Study-clustered 95 % CIs.",
        "",
    ]
    for site, found in mimics.items():
        header = " | ".join(f"called at the {names[c]} ({thresholds[c]:.3f})" for c in columns)
        lines += [f"**{site}** ({found['hips']} hips)", "", f"| mimic | {header} | median p |"]
        lines.append("|---" * (len(columns) + 2) + "|")
        for kind, row in found["by_mimic"].items():
            cells = " | ".join(fmt(row[c]) for c in columns)
            lines.append(f"| {kind} | {cells} | {row['median_p']:.3f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def planted_section(dependence: dict[str, dict], planted: dict) -> str:
    """The site-dependence control on each group, and its positive control (a planted shortcut)."""
    lines = [
        "### Does p(fracture) depend on the site? A control shown to catch a planted shortcut",
        "",
        "Labels are drawn independently of the site, so a model without a site shortcut scores the normal hips"
        " of every site alike. Per site: the AUC (study-clustered 95 % CI) with which p(fracture) tells that"
        f" site's normal hips from the other sites' (0.5 = no dependence; flagged outside 0.5 ± {FLAG_MARGIN}).",
        "",
        "| group | AUC by site (normal hips) | flagged |",
        "|---|---|---|",
    ]
    for name, found in dependence.items():
        aucs = ", ".join(f"{site} {fmt(value, pct=False)}" for site, value in found["auc_by_site"].items())
        flagged = ", ".join(found["flagged_sites"]) or "no"
        lines.append(f"| {name} | {aucs or '– (one site)'} | {flagged} |")
    independent, shortcut = planted["independent"], planted["planted"]
    verdict = "**caught**" if planted["caught"] else "**NOT caught: this control is not evidence of anything**"
    lines += [
        "",
        f"Positive control: the histogram model trained on fixed-profile phantoms of {' and '.join(PLANTED_SITES)}"
        " with every fracture from the second site and every normal hip from the first (a planted site–label"
        " correlation), and the same model trained with labels independent of the site, each tested on new studies"
        " with independent labels. Planted: site AUCs "
        + ", ".join(f"{s} {fmt(v, pct=False)}" for s, v in shortcut["auc_by_site"].items())
        + f" → {verdict}; independent: "
        + ", ".join(f"{s} {fmt(v, pct=False)}" for s, v in independent["auc_by_site"].items())
        + f" (flagged: {'yes' if independent['flagged'] else 'no'}).",
        "",
    ]
    return "\n".join(lines) + "\n"


def skipped_controls(folder: Path) -> str:
    return f"""### Shortcut controls: skipped

The phantom evaluation's shortcut controls are not run on `{dataset_name(folder)}`: the global-statistics baseline is
trained on phantoms of the training sites, the laterality-marker swap re-renders the same phantom studies
with the other letter, and the occlusion control keeps its second box off the proximal femur, which
`labels.csv` does not annotate. They probe the synthetic task for shortcuts; on real data, read the heat maps
and the false-negative sheet instead.
"""


def median_table(results: list[GroupResult]) -> str:
    """Median calibrated p(fracture) per ground-truth label (rows) and group (columns)."""
    labels = [label for label in LABELS if any(label in r.metrics["median_score_by_label"] for r in results)]
    rows = [
        f"| {label} | "
        + " | ".join(
            f"{r.metrics['median_score_by_label'][label]:.2f}" if label in r.metrics["median_score_by_label"] else "–"
            for r in results
        )
        + " |"
        for label in labels
    ]
    head = "| median p(fracture) | " + " | ".join(r.name for r in results) + " |"
    return "\n".join([head, "|---|" + "---|" * len(results), *rows])


def visibility_section(results: list[GroupResult]) -> str:
    """Garden I and II: how visible the line was in the crop, and Garden I found by visibility
    (:mod:`.visibility`); empty when no group measured it (a labelled folder has no line-free copy)."""
    measured = [result for result in results if "line_visibility" in result.metrics]
    if not measured:
        return ""
    rows = []
    for result in measured:
        seen = result.metrics["line_visibility"]
        medians = [
            f"{np.median(seen[label]['ccr']):.2f} (n = {len(seen[label]['ccr'])})" if seen[label]["ccr"] else "–"
            for label in VISIBILITY_LABELS
        ]
        by_bin = [_found(v) for v in seen["garden_I_found_by_ccr"].values()]
        rows.append(f"| {result.name} | {' | '.join(medians)} | {' | '.join(by_bin)} |")
    bins = " | ".join(
        f"Garden I found, {name}" for name in measured[0].metrics["line_visibility"]["garden_I_found_by_ccr"]
    )
    return f"""
### Was the line there to see? (Garden I and II)

Each Garden I and II study is drawn a second time from the same random draws with its fracture line at
zero contrast, through the same DICOM encode, decode, LUT, split and resize. The difference is the line as the model
receives it. Contrast-to-clutter ratio (CCR): the line's mean grey-level drop over its core, divided by the
standard deviation of the line-free crop's fine detail (crop minus its Gaussian blur at {CLUTTER_SIGMA:g} px) in the
fracture box. Below 1 the line is no darker than the texture around it.

![p(fracture) against line visibility](line_visibility.png)

| group | median CCR, Garden I | median CCR, Garden II | {bins} |
|---|---|---|{"---|" * len(CCR_BINS) + "---|"}
{chr(10).join(rows)}
"""


def _found(counted: dict) -> str:
    return "–" if not counted["hips"] else f"{counted['found']} of {counted['hips']}: {fmt(counted['rate'])}"


def report_page(
    header: str,
    results: list[GroupResult],
    external: list[GroupResult],
    misses: dict[str, list[tuple]],
    threshold: float,
    controls: str,
    missed_in: str,
    targets: str = "",
) -> str:
    """The whole report.md: header, figures, a section per group, calibration, misses, controls, targets
    (``targets``: :func:`~cds_service.training.evaluation.targets.targets_section`)."""
    fractures = sum(int(result.data.fractured.sum()) for result in external)
    eces = "; ".join(f"{result.name} {fmt(result.metrics['ece'], pct=False)}" for result in results)
    return f"""{header}
![ROC curves](roc.png)

![Heat maps: {external[0].name}](heatmaps.png)

{chr(10).join(group_section(result) for result in results)}
### Calibration

![Reliability diagram](reliability.png)

Expected calibration error ({CALIBRATION_BINS} equal-width bins of p(fracture), target ≤ {ECE_TARGET}): {eces}.

### p(fracture) by subtype

![p(fracture) by ground truth](scores_by_subtype.png)

{median_table(results)}

### False negatives on {missed_in}

![False negatives by subtype](false_negatives.png)

{miss_summary(misses, fractures, threshold)}
{visibility_section(results)}
{controls}
{targets}
### Targets (published figures)

Fracture AUC ≥ {PUBLISHED["auc"]}, sensitivity ≥ {100 * PUBLISHED["sensitivity"]:.1f} %, specificity ≥
{100 * PUBLISHED["specificity"]:.1f} % (Study A); Garden 4-class accuracy ≥ {100 * PUBLISHED["garden_accuracy"]:.2f} %
(Study B); heat-map localisation ≥ {100 * PUBLISHED["localisation"]:.0f} %; expected calibration error ≤ {ECE_TARGET}
(issue 12; the seed studies publish no calibration figure). Figures above that miss a target are reported as they are.
"""
