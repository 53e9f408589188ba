"""STARD-2015-style evaluation of the exported models on freshly generated held-out phantoms.

Runs the ONNX files in ``model_repository/`` (what Triton serves) with onnxruntime on crops made by
the serving preprocessing, for the internal sites and the external site separately, and writes
``report.md``, ``metrics.json`` and figures (ROC curves, confusion matrices) to the output folder.

Reported: accuracy, sensitivity, specificity, F1 and AUC with 95 % CIs (Wilson for proportions,
bootstrap for F1/AUC) at the stored operating threshold; per-subtype sensitivity (Garden I–IV,
AO 31-A1/A2/A3); Garden 4-class accuracy and undisplaced (I–II) vs displaced (III–IV) accuracy on
femoral-neck fractures; heat-map localisation as Study A measured it (fractures: the hottest point
of the fracture-class map inside the fracture box; non-fractures: outside the proximal femur); a
global-statistics baseline (intensity histogram + logistic regression) that should stay far below;
and the laterality-marker swap test (the same studies with the other marker letter burned in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cds_service.inference.triton_server import read_model_config
from cds_service.training.dataset import CropSet, generate
from cds_service.training.metrics import binary_report, bootstrap, roc_auc, roc_curve, wilson
from cds_service.training.phantoms import LABELS, TRAINING_SITES

PUBLISHED = {"auc": 0.99, "sensitivity": 0.952, "specificity": 0.969, "garden_accuracy": 0.9334, "localisation": 0.95}


@dataclass
class OnnxModel:
    """One exported model run with onnxruntime, with the metadata from its config.pbtxt."""

    name: str
    session: object
    parameters: dict[str, str]

    @classmethod
    def load(cls, repository: Path, name: str) -> OnnxModel:
        import onnxruntime as ort

        config = read_model_config(repository / name / "config.pbtxt")
        params = {key: value.string_value for key, value in config.parameters.items()}
        version = max((p for p in (repository / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
        return cls(name, session, params)

    def run(self, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities [N, C] and raw CAMs [N, C, h, w]."""
        probs, cams = [], []
        for start in range(0, len(images), batch):
            logits, cam = self.session.run(["logits", "cam"], {"image": images[start : start + batch, None]})
            exp = np.exp(logits - logits.max(1, keepdims=True))
            probs.append(exp / exp.sum(1, keepdims=True))
            cams.append(cam)
        return np.concatenate(probs), np.concatenate(cams)


def hottest_points(cams: np.ndarray, size: int) -> np.ndarray:
    """(x, y) in crop pixels of each map's maximum after ReLU and bilinear upsampling to the crop."""
    points = []
    for cam in cams:
        up = np.asarray(
            Image.fromarray(np.maximum(cam, 0).astype(np.float32), mode="F").resize(
                (size, size), Image.Resampling.BILINEAR
            )
        )
        y, x = np.unravel_index(int(np.argmax(up)), up.shape)
        points.append((x + 0.5, y + 0.5))
    return np.array(points)


def inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return (
        (points[:, 0] >= boxes[:, 0])
        & (points[:, 0] <= boxes[:, 2])
        & (points[:, 1] >= boxes[:, 1])
        & (points[:, 1] <= boxes[:, 3])
    )


def histogram_features(images: np.ndarray, bins: int = 32) -> np.ndarray:
    return np.stack([np.histogram(image, bins=bins, range=(0, 256), density=True)[0] for image in images])


def baseline_auc(train: CropSet, test: CropSet, resamples: int) -> tuple[float, float, float]:
    """AUC of logistic regression on intensity histograms (global image statistics only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(histogram_features(train.images))
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(histogram_features(train.images)), train.fractured)
    score = model.predict_proba(scaler.transform(histogram_features(test.images)))[:, 1]
    return bootstrap(roc_auc, test.fractured, score, resamples=resamples)


def _fmt(triple: tuple[float, float, float], pct: bool = True) -> str:
    value, low, high = triple
    if np.isnan(value):
        return "n/a (none in the set)"
    if pct:
        return f"{100 * value:.1f} % ({100 * low:.1f}–{100 * high:.1f})"
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def _plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("Fracture model ROC (synthetic phantoms)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_heatmaps(data: CropSet, fracture: OnnxModel, path: Path) -> None:
    """One crop per label (external set): the fracture-class map, the ground-truth box, the hottest point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [int(np.flatnonzero(data.label == k)[0]) for k in range(1, len(LABELS)) if (data.label == k).any()]
    picks += [int(i) for i in np.flatnonzero(data.label == 0)[:2]]
    index = fracture.parameters.get("class_names", "no_fracture,fracture").split(",").index("fracture")
    probs, cams = fracture.run(data.images[picks])
    size = data.images.shape[-1]
    points = hottest_points(cams[:, index], size)
    fig, axes = plt.subplots(3, 3, figsize=(9, 9.6), dpi=100)
    for ax, i, prob, cam, point in zip(axes.flat, picks, probs[:, index], cams[:, index], points, strict=False):
        heat = np.maximum(cam, 0)
        heat = heat / heat.max() if heat.max() > 0 else heat
        up = np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
        ax.imshow(data.images[i], cmap="gray", vmin=0, vmax=255)
        ax.imshow(up, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        box = data.boxes[i] if not np.isnan(data.boxes[i, 0]) else data.femur[i]
        colour = "lime" if data.label[i] else "white"
        ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color=colour, lw=1.2))
        ax.plot(*point, marker="x", color="white", markersize=9, mew=2)
        ax.set_title(f"{LABELS[data.label[i]]}: p(fracture) {prob:.2f}", fontsize=10)
        ax.axis("off")
    for ax in axes.flat[len(picks) :]:
        ax.axis("off")
    title = "External site: fracture-class map; box: fracture (green) or proximal femur (white); × hottest point"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _confusion(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> str:
    lines = ["| truth \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, name in enumerate(names):
        counts = [int(((truth == i) & (predicted == j)).sum()) for j in range(len(names))]
        lines.append(f"| {name} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


def evaluate_group(
    name: str, data: CropSet, fracture: OnnxModel, garden: OnnxModel, resamples: int
) -> tuple[dict, str, tuple[np.ndarray, np.ndarray, float]]:
    """Metrics and the Markdown section for one group of sites."""
    size = data.images.shape[-1]
    threshold = float(fracture.parameters.get("operating_threshold") or 0.5)
    index = fracture.parameters.get("class_names", "no_fracture,fracture").split(",").index("fracture")
    probs, cams = fracture.run(data.images)
    score = probs[:, index]
    truth = data.fractured
    report = binary_report(truth, score, threshold)
    for key in ("f1", "auc"):
        report[key] = bootstrap(
            (lambda t, s: float(roc_auc(t, s))) if key == "auc" else (lambda t, s: _f1(t, s >= threshold)),
            truth,
            score,
            resamples=resamples,
        )
    subtype = {
        LABELS[k]: wilson(int((score[data.label == k] >= threshold).sum()), int((data.label == k).sum()))
        for k in range(1, len(LABELS))
    }
    points = hottest_points(cams[:, index], size)
    positive = truth & ~np.isnan(data.boxes[:, 0])
    negative = ~truth & ~np.isnan(data.femur[:, 0])
    loc_pos = wilson(int(inside(points[positive], data.boxes[positive]).sum()), int(positive.sum()))
    loc_neg = wilson(int((~inside(points[negative], data.femur[negative])).sum()), int(negative.sum()))

    neck = data.garden >= 0
    g_probs, _ = garden.run(data.images[neck])
    g_pred, g_truth = g_probs.argmax(1), data.garden[neck]
    garden4 = wilson(int((g_pred == g_truth).sum()), int(neck.sum()))
    displaced = wilson(int(((g_pred >= 2) == (g_truth >= 2)).sum()), int(neck.sum()))

    fpr, tpr, _ = roc_curve(truth, score)
    metrics = {
        "crops": len(data),
        "fractured": int(truth.sum()),
        "threshold": threshold,
        **{k: list(v) for k, v in report.items()},
        "subtype_sensitivity": {k: list(v) for k, v in subtype.items()},
        "localisation_fracture": list(loc_pos),
        "localisation_non_fracture": list(loc_neg),
        "garden_4class_accuracy": list(garden4),
        "garden_displaced_accuracy": list(displaced),
    }
    predicted = (score >= threshold).astype(int)
    section = f"""### {name}

{len(data)} hip crops ({int(truth.sum())} fractured) from {len(data) // 2} studies; threshold {threshold:.3f}.

| metric | value (95 % CI) | published |
|---|---|---|
| accuracy | {_fmt(report["accuracy"])} | 96.1 % (94.9–97.3) |
| sensitivity | {_fmt(report["sensitivity"])} | 95.2 % |
| specificity | {_fmt(report["specificity"])} | 96.9 % |
| F1 | {_fmt(report["f1"], pct=False)} | 0.961 |
| AUC | {_fmt(report["auc"], pct=False)} | 0.99 |
| heat-map localisation, fractures (hottest point in the fracture box) | {_fmt(loc_pos)} | 100 % (20/20) |
| heat-map localisation, non-fractures (hottest point off the proximal femur) | {_fmt(loc_neg)} | 95 % (19/20) |
| Garden 4-class accuracy (femoral-neck fractures, n = {int(neck.sum())}) | {_fmt(garden4)} | 93.34 % (Study B, CV) |
| Garden I–II vs III–IV accuracy | {_fmt(displaced)} | – |

Sensitivity by subtype: {", ".join(f"{k} {_fmt(v)}" for k, v in subtype.items())}.

Fracture confusion matrix:

{_confusion(truth.astype(int), predicted, ["no fracture", "fracture"])}

Garden confusion matrix (femoral-neck fractures):

{_confusion(g_truth, g_pred, ["I", "II", "III", "IV"])}
"""
    return metrics, section, (fpr, tpr, float(report["auc"][0]))


def _f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    from cds_service.training.metrics import f1

    return f1(truth, predicted)


def evaluate(repository: Path, output: Path, studies: int = 400, seed: int = 424242, fast: bool = False) -> dict:
    """Evaluate the exported models; writes report.md, metrics.json, roc.png into ``output``."""
    if fast:
        studies = min(studies, 60)
    resamples = 200 if fast else 2000
    fracture, garden = OnnxModel.load(repository, "fracture"), OnnxModel.load(repository, "garden")
    size = int(fracture.parameters.get("input_size") or 192)
    output.mkdir(parents=True, exist_ok=True)
    groups = {
        "Internal sites (held out: new seed)": generate(
            studies, seed, size, TRAINING_SITES, p_fracture=0.5, compression=True
        ),
        "External site (never used in training)": generate(
            studies, seed + 1, size, ("external",), p_fracture=0.5, compression=True
        ),
    }
    sections, metrics, curves = [], {}, {}
    for name, data in groups.items():
        metrics[name], section, curves[name] = evaluate_group(name, data, fracture, garden, resamples)
        sections.append(section)

    external = groups["External site (never used in training)"]
    baseline_train = generate(max(studies // 2, 30), seed + 2, size, TRAINING_SITES, p_fracture=0.5, progress=False)
    metrics["baseline_auc_external"] = list(baseline_auc(baseline_train, external, resamples))
    swapped = generate(studies, seed + 1, size, ("external",), p_fracture=0.5, swap_marker=True, compression=True)
    index = fracture.parameters.get("class_names", "no_fracture,fracture").split(",").index("fracture")
    threshold = float(fracture.parameters.get("operating_threshold") or 0.5)
    before, after = fracture.run(external.images)[0][:, index], fracture.run(swapped.images)[0][:, index]
    flips = int(((before >= threshold) != (after >= threshold)).sum())
    metrics["marker_swap"] = {
        "crops": len(before),
        "calls_changed": flips,
        "mean_abs_delta": float(np.abs(before - after).mean()),
    }
    _plot_roc(curves, output / "roc.png")
    _plot_heatmaps(external, fracture, output / "heatmaps.png")
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))

    params = fracture.parameters
    report = f"""# Evaluation of the shipped models (STARD 2015 style)

> **Synthetic data only.** Models and test sets are phantoms generated by `cds_service.training.phantoms`;
> these figures say how well the pipeline learns *this synthetic task*, nothing about real radiographs.
> Not for clinical use.

- Models: `fracture` and `garden`, {params.get("architecture")} at {size}×{size},
  training data `{params.get("training_data")}`.
- Test sets: freshly generated with seed {seed} (internal sites {", ".join(TRAINING_SITES)}) and {seed + 1}
  (external site, a profile never used in training: 3000×2500, 16-bit, MONOCHROME1, RLE); half the
  studies with one fractured hip; every crop made by the serving preprocessing (decode → LUT → split → resize).
- Index test: the exported ONNX graphs (onnxruntime), at the stored operating threshold chosen on validation data.
- Reference standard: the generator's ground truth per hip (label, fracture box), known before the index
  test runs (no blinding issue; no indeterminate results).
- Flow: {studies} studies per group, two hips each; none excluded (every file decoded and split), all analysed.
- Intervals: Wilson score for proportions, percentile bootstrap ({resamples} resamples) for F1 and AUC.
- Reproduce: `cds-service train`, then `cds-service evaluate{" --fast" if fast else ""}` for this report.

![ROC curves](roc.png)

![Heat maps on the external site](heatmaps.png)

{chr(10).join(sections)}
### Is the task trivial? Two controls

- **Global-statistics baseline** (32-bin intensity histogram + logistic regression, trained on
  other phantoms): AUC {_fmt(tuple(metrics["baseline_auc_external"]), pct=False)} on the external set
  (should stay well below the model and under 0.75).
- **Laterality-marker swap**: the external studies re-rendered with the other marker letter burned in:
  {flips} of {len(before)} calls changed, mean |Δp| = {metrics["marker_swap"]["mean_abs_delta"]:.4f}.

### Targets (published figures)

Fracture AUC ≥ {PUBLISHED["auc"]}, sensitivity ≥ {100 * PUBLISHED["sensitivity"]:.1f} %, specificity ≥
{100 * PUBLISHED["specificity"]:.1f} % (Study A); Garden 4-class accuracy ≥ {100 * PUBLISHED["garden_accuracy"]:.2f} %
(Study B); heat-map localisation ≥ 95 %. Figures above that miss a target are reported as they are.
"""
    (output / "report.md").write_text(report)
    return metrics
