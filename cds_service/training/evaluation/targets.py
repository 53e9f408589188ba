"""The targets table: each target of the evaluation, per external site, met or missed.

The issue's targets are read on the external sites (never used in training) and on their mimic groups,
with study-clustered 95 % intervals. A target is **met** when the whole interval lies on its side,
**point only** when the estimate does but the interval crosses it (more studies would decide), and
**missed** otherwise. The row for "one operating point" takes each stored point (sensitive,
Youden, high-specificity) and is met by the best of them; a reader sees which.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cds_service.training.evaluation.groups import GroupResult
from cds_service.training.evaluation.markdown import ECE_TARGET, PUBLISHED, fmt
from cds_service.training.evaluation.mimics import MIMIC_TARGET

GARDEN_I_TARGET = 0.80
SITE_TARGET = 0.95


@dataclass(frozen=True)
class Verdict:
    """One cell of the table: the measured value as printed and whether it meets its target."""

    shown: str
    state: str  # "met", "point only", "missed", "not measured"


def judge(triple: tuple[float, float, float] | list[float], target: float, at_least: bool = True) -> str:
    """``met`` / ``point only`` / ``missed`` for an (estimate, low, high) triple against ``target``."""
    value, low, high = triple
    if value is None or np.isnan(value):
        return "not measured"
    if at_least:
        return "met" if low >= target else "point only" if value >= target else "missed"
    return "met" if high <= target else "point only" if value <= target else "missed"


def _cell(triple, target: float, at_least: bool = True, pct: bool = True) -> Verdict:
    if triple is None:
        return Verdict("–", "not measured")
    return Verdict(fmt(triple, pct=pct), judge(triple, target, at_least))


def operating_point_verdict(points: dict) -> Verdict:
    """Seed A's pair at one operating point: the stored point closest to reaching both targets."""
    best: tuple[float, str, Verdict] | None = None
    for name, point in points.items():
        sensitivity, specificity = point["sensitivity"], point["specificity"]
        states = (judge(sensitivity, PUBLISHED["sensitivity"]), judge(specificity, PUBLISHED["specificity"]))
        state = "met" if states == ("met", "met") else "missed" if "missed" in states else "point only"
        shortfall = max(0.0, PUBLISHED["sensitivity"] - sensitivity[0]) + max(
            0.0, PUBLISHED["specificity"] - specificity[0]
        )
        shown = f"{name.replace('_', '-')} {point['threshold']:.3g}: {fmt(sensitivity)} / {fmt(specificity)}"
        if best is None or shortfall < best[0]:
            best = (shortfall, name, Verdict(shown, state))
    return best[2] if best else Verdict("–", "not measured")


def group_verdicts(result: GroupResult, mimics: dict | None, site: str | None) -> dict[str, Verdict]:
    """Every target's cell for one external group (``mimics``: the evaluation's mimic metrics)."""
    m = result.metrics
    recall_i = m.get("garden_stage_recall", {}).get("I")
    mimic = None
    if mimics and site in mimics:
        mimic = mimics[site]["by_mimic"]["all mimics"].get("high_specificity")
    return {
        "AUC ≥ 0.99": _cell(m["auc"], PUBLISHED["auc"], pct=False),
        "one operating point: sensitivity ≥ 95.2 % and specificity ≥ 96.9 % (sensitivity / specificity)": (
            operating_point_verdict(m["operating_points"])
        ),
        "mimic false positives ≤ 5 % at the card's (high-specificity) point": _cell(mimic, MIMIC_TARGET, False),
        "fracture-site accuracy ≥ 95 % (called fractures)": _cell(m.get("fracture_site_accuracy"), SITE_TARGET),
        "Garden 4-class ≥ 93.34 % (true neck fractures)": _cell(
            m.get("garden_4class_accuracy"), PUBLISHED["garden_accuracy"]
        ),
        "Garden I staged as I ≥ 80 % (recall of stage I)": _cell(recall_i, GARDEN_I_TARGET),
        "localisation, fractures ≥ 95 %": _cell(m.get("localisation_fracture"), PUBLISHED["localisation"]),
        "localisation, normal hips (off the femur's mask) ≥ 95 %": _cell(
            m.get("localisation_non_fracture"), PUBLISHED["localisation"]
        ),
        "ECE ≤ 0.03": _cell(m["ece"], ECE_TARGET, False, pct=False),
    }


def targets_section(external: list[GroupResult], sites: list[str | None], mimics: dict | None) -> str:
    """The markdown table of every target per external group (``sites``: each group's mimic key)."""
    columns = [group_verdicts(result, mimics, site) for result, site in zip(external, sites, strict=True)]
    head = "| target | " + " | ".join(result.name for result in external) + " |"
    rows = [
        f"| {target} | " + " | ".join(f"{cells[target].shown} **{cells[target].state}**" for cells in columns) + " |"
        for target in columns[0]
    ]
    met = sum(cell.state == "met" for cells in columns for cell in cells.values())
    total = sum(len(cells) for cells in columns)
    return f"""### Targets: met or missed (external sites and their mimic groups)

Study-clustered 95 % intervals. **met**: the whole interval on the target's side; **point only**: the
estimate meets it, the interval crosses it; **missed**: the estimate misses it. {met} of {total} cells met.

{head}
|---|{"---|" * len(external)}
{chr(10).join(rows)}
"""
