"""The figures of the report: ROC curves, reliability diagram, heat maps, p(fracture) by subtype,
false-negative contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cds_service.training.dataset import CropSet
from cds_service.training.evaluation.groups import CALIBRATION_BINS, GroupResult
from cds_service.training.evaluation.localisation import hottest_point, upsample
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.metrics import reliability_bins
from cds_service.training.phantoms import LABELS


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, source: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"Fracture model ROC ({source})")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(results: list[GroupResult], path: Path) -> None:
    """Observed fracture frequency against mean p(fracture) per bin, one curve per group; bin counts below."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 7), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = 1 / CALIBRATION_BINS / (len(results) + 1)
    for k, result in enumerate(results):
        confidence, frequency, counts = reliability_bins(result.data.fractured, result.score, CALIBRATION_BINS)
        used = counts > 0
        line = top.plot(
            confidence[used], frequency[used], marker="o", label=f"{result.name} (ECE {result.metrics['ece'][0]:.3f})"
        )
        left = np.arange(CALIBRATION_BINS) / CALIBRATION_BINS + (k + 0.5) * width
        bottom.bar(left, counts, width=width, align="edge", color=line[0].get_color())
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    top.set_ylabel("observed fraction fractured")
    top.set_ylim(-0.02, 1.02)
    top.set_title(f"Reliability ({CALIBRATION_BINS} equal-width bins of p(fracture))")
    top.legend(loc="upper left", fontsize=7)
    bottom.set_yscale("symlog", linthresh=1)
    bottom.set_xlabel("p(fracture), calibrated")
    bottom.set_ylabel("crops per bin")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_box(ax, box: np.ndarray, colour: str) -> None:
    if not np.isnan(box[0]):
        ax.add_patch(pyplot().Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color=colour, lw=1.2))


def plot_heatmaps(data: CropSet, fracture: OnnxModel, path: Path, group: str) -> None:
    """One crop per label: the fracture-class map, the ground-truth box, the hottest point."""
    plt = pyplot()
    picks = [int(np.flatnonzero(data.label == k)[0]) for k in range(1, len(LABELS)) if (data.label == k).any()]
    picks += [int(i) for i in np.flatnonzero(data.label == 0)[:2]]
    probs, cams = fracture.fracture(data.images[picks])
    size = data.images.shape[-1]
    fig, axes = plt.subplots(3, 3, figsize=(9, 9.6), dpi=100)
    for ax, i, prob, cam in zip(axes.flat, picks, probs, cams, strict=False):
        heat = upsample(cam, size)
        ax.imshow(data.images[i], cmap="gray", vmin=0, vmax=255)
        ax.imshow(heat / heat.max() if heat.max() > 0 else heat, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        draw_box(ax, data.boxes[i] if data.label[i] else data.femur[i], "lime" if data.label[i] else "white")
        ax.plot(*hottest_point(heat), marker="x", color="white", markersize=9, mew=2)
        ax.set_title(f"{LABELS[data.label[i]]}: p(fracture) {prob:.2f}", fontsize=10)
        ax.axis("off")
    for ax in axes.flat[len(picks) :]:
        ax.axis("off")
    title = f"{group}: fracture-class map; box: fracture (green) or proximal femur (white); × hottest point"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_false_negatives(misses: dict[str, list[tuple]], path: Path, per_row: int = 6) -> None:
    """Contact sheet: a row per fracture subtype with misses, its most confident misses with the
    fracture box magnified; the subtypes with none are named in the title (no empty rows)."""
    plt = pyplot()
    missed = {label: found for label, found in misses.items() if found}
    clean = [label for label, found in misses.items() if not found]
    rows = max(1, len(missed))
    fig, axes = plt.subplots(rows, per_row, figsize=(2.2 * per_row, 2.35 * rows + 0.4), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if not missed:
        axes[0][0].text(0.5, 0.5, "none missed", ha="center", va="center", fontsize=8, transform=axes[0][0].transAxes)
    for row, (label, found) in zip(axes, missed.items(), strict=False):
        row[0].set_ylabel(f"{label}\n{len(found)} missed", fontsize=8)
        for ax, (image, box, prob, site) in zip(row, found, strict=False):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            draw_box(ax, box, "lime")
            ax.set_title(f"{site}: p {prob:.2f}", fontsize=7)
            if not np.isnan(box[0]):
                _zoom_inset(ax, image, box)
        for ax in row[len(found) :]:
            ax.axis("off")
    title = "False negatives by subtype (green: fracture box, magnified in the lower right; p = p(fracture))"
    if clean:
        title += f"\nnone missed: {', '.join(clean)}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def zoom_window(box: np.ndarray, size: int, margin: float = 0.3, least: int = 48) -> tuple[int, int, int]:
    """A square (x0, y0, side) around ``box`` (its longer side plus ``margin`` each way, at least
    ``least`` px), kept inside the ``size``-px crop: what the false-negative sheet magnifies."""
    side = min(size, max(least, round(max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin))))
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(np.clip(round(centre_x - side / 2), 0, size - side))
    y0 = int(np.clip(round(centre_y - side / 2), 0, size - side))
    return x0, y0, side


def _zoom_inset(ax, image: np.ndarray, box: np.ndarray) -> None:
    """The fracture box magnified in the crop's lower right: a 1–2 px Garden I line is lost at the
    sheet's scale (a 384-px crop drawn in about 150 px) and visible here, or visibly absent."""
    x0, y0, side = zoom_window(box, image.shape[-1])
    inset = ax.inset_axes([0.5, 0.0, 0.5, 0.5])
    inset.imshow(image[y0 : y0 + side, x0 : x0 + side], cmap="gray", vmin=0, vmax=255)
    draw_box(inset, box - np.array([x0, y0, x0, y0], dtype=box.dtype), "lime")
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor("white")


def plot_line_visibility(results: list[GroupResult], path: Path, threshold: float) -> None:
    """p(fracture) against the line's contrast-to-clutter ratio (:mod:`.visibility`), Garden I and II,
    one panel per group: where the misses sit, and whether their lines were visible at all."""
    plt = pyplot()
    fig, grid = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), dpi=110, sharey=True, squeeze=False)
    axes = grid[0]
    for ax, result in zip(axes, results, strict=True):
        seen = result.metrics.get("line_visibility", {})
        for label, marker, colour in (("garden_I", "o", "tab:red"), ("garden_II", "^", "tab:blue")):
            points = seen.get(label, {"ccr": [], "score": []})
            ax.scatter(points["ccr"], points["score"], marker=marker, s=18, c=colour, alpha=0.75, label=label)
        ax.axhline(threshold, color="black", lw=0.8, ls="--", label=f"threshold {threshold:.3f}")
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 1.0)
        ax.set_xlabel("line contrast-to-clutter ratio in the crop")
        ax.set_title(result.name, fontsize=8)
    axes[0].set_ylabel("p(fracture), calibrated")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "Was the line there to see? Garden I and II fractures (dotted: CCR 1, the line as dark as the texture)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scores_by_subtype(results: list[GroupResult], path: Path, thresholds: dict[str, float]) -> None:
    """p(fracture) of every crop by ground-truth label (no fracture, then each subtype), one box per
    group, with the stored thresholds: a subtype the model cannot see sits with the non-fractures.

    (That is how the invisible AO A3 phantoms were found: median p 0.14, the non-fractures' level.)
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    width = 0.8 / max(1, len(results))
    for k, result in enumerate(results):
        present = [label for label in range(len(LABELS)) if (result.data.label == label).any()]
        positions = [label + (k - (len(results) - 1) / 2) * width for label in present]
        scores = [result.score[result.data.label == label] for label in present]
        colour = f"C{k}"
        ax.boxplot(
            scores,
            positions=positions,
            widths=width * 0.9,
            showfliers=True,
            patch_artist=True,
            boxprops={"facecolor": colour, "alpha": 0.45, "edgecolor": colour},
            medianprops={"color": "black"},
            whiskerprops={"color": colour},
            capprops={"color": colour},
            flierprops={"marker": ".", "markersize": 3, "markeredgecolor": colour},
        )
        ax.plot([], [], color=colour, linewidth=6, alpha=0.45, label=result.name)
    styles = ("--", ":")
    for (name, threshold), style in zip(thresholds.items(), styles, strict=False):
        ax.axhline(threshold, color="grey", linestyle=style, linewidth=1, label=f"{name} threshold {threshold:.3f}")
    ax.set_xticks(range(len(LABELS)), [label.replace("_", " ") for label in LABELS], fontsize=8)
    ax.set_xlim(-0.6, len(LABELS) - 0.4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("p(fracture), calibrated")
    ax.set_title("p(fracture) by ground truth: a subtype the model cannot see sits with 'none'", fontsize=10)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
