"""The targets table says met, point only or missed from the interval, never flatters a miss, and
takes the one operating point closest to Seed A's pair."""

from __future__ import annotations

from types import SimpleNamespace

from cds_service.training.evaluation.targets import judge, operating_point_verdict, targets_section


def test_a_target_is_met_only_when_the_whole_interval_is_on_its_side():
    assert judge((0.995, 0.991, 0.998), 0.99) == "met"
    assert judge((0.992, 0.97, 0.999), 0.99) == "point only"
    assert judge((0.98, 0.95, 0.995), 0.99) == "missed"  # the interval reaching the target is not a pass
    assert judge((0.02, 0.01, 0.025), 0.03, at_least=False) == "met"  # ECE: at most
    assert judge((0.04, 0.02, 0.06), 0.03, at_least=False) == "missed"
    assert judge((float("nan"),) * 3, 0.5) == "not measured"


def _point(threshold, sensitivity, specificity):
    return {"threshold": threshold, "sensitivity": sensitivity, "specificity": specificity}


def test_the_operating_point_row_takes_the_point_closest_to_both_targets():
    points = {
        "operating": _point(0.1, (0.96, 0.93, 0.99), (0.50, 0.45, 0.55)),  # sensitive, far from the specificity
        "high_specificity": _point(0.7, (0.90, 0.85, 0.94), (0.98, 0.97, 0.99)),
    }
    verdict = operating_point_verdict(points)
    assert verdict.shown.startswith("high-specificity 0.7") and verdict.state == "missed"
    both = {"youden": _point(0.4, (0.99, 0.975, 1.0), (0.99, 0.98, 1.0))}
    assert operating_point_verdict(both).state == "met"


def _metrics(auc, site):
    missing = (float("nan"),) * 3
    return {
        "auc": auc,
        "operating_points": {"operating": _point(0.2, (0.96, 0.9, 0.99), (0.6, 0.5, 0.7))},
        "fracture_site_accuracy": site,
        "garden_4class_accuracy": (0.5, 0.4, 0.6),
        "garden_stage_recall": {"I": (0.9, 0.85, 0.95)},
        "localisation_fracture": (0.97, 0.955, 0.99),
        "localisation_non_fracture": missing,
        "ece": (0.05, 0.03, 0.07),
    }


def test_the_table_has_a_verdict_per_target_and_group_and_counts_what_is_met():
    groups = [
        SimpleNamespace(name="External", metrics=_metrics((0.995, 0.992, 0.998), (0.97, 0.96, 0.99))),
        SimpleNamespace(name="External B", metrics=_metrics((0.9, 0.85, 0.95), (0.5, 0.4, 0.6))),
    ]
    mimics = {"external": {"by_mimic": {"all mimics": {"high_specificity": [0.02, 0.0, 0.04]}}}}
    table = targets_section(groups, ["external", "external-b"], mimics)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "**met**" in rows["AUC ≥ 0.99"].split(" | ")[1] and "**missed**" in rows["AUC ≥ 0.99"].split(" | ")[2]
    mimic_row = rows["mimic false positives ≤ 5 % at the card's (high-specificity) point"]
    assert "**met**" in mimic_row and "**not measured**" in mimic_row  # external-b has no mimic group here
    assert "**point only**" not in rows["ECE ≤ 0.03"] and rows["ECE ≤ 0.03"].count("**missed**") == 2
    assert (
        "Garden I staged as I ≥ 80 % (recall of stage I)" in rows
        and "**not measured**" in rows["localisation, normal hips (off the femur's mask) ≥ 95 %"]
    )
    # Met: AUC, mimics, site, Garden I and fracture localisation on the first group; Garden I and
    # fracture localisation on the second.
    assert "7 of 18 cells met" in table
