import json

from cds_service.cdshooks.cards import finding_card, problem_card, summary_and_indicator
from cds_service.cdshooks.models import to_json
from tests.findings_factory import findings


def test_displaced_fracture_is_critical_and_named_by_side():
    summary, indicator = summary_and_indicator(findings())
    assert indicator == "critical"
    assert "right" in summary and "Garden III–IV" in summary and "94 %" in summary
    assert len(summary) < 140


def test_undisplaced_fracture_is_a_warning():
    summary, indicator = summary_and_indicator(findings(garden=(0.6, 0.3, 0.05, 0.05)))
    assert indicator == "warning" and "Garden I–II" in summary


def test_no_fracture_is_info():
    summary, indicator = summary_and_indicator(findings(right=0.1))
    assert indicator == "info" and "no hip fracture" in summary


def test_untrained_models_say_so_in_the_summary():
    summary, _ = summary_and_indicator(findings(training_data="untrained"))
    assert summary.startswith("UNTRAINED model")


def test_card_json_has_no_nulls_and_the_spec_fields():
    card = to_json(finding_card(findings(), {"resourceType": "DiagnosticReport"}, "http://x"))
    assert "null" not in json.dumps(card)
    assert card["uuid"] and card["suggestions"][0]["uuid"]
    assert card["selectionBehavior"] == "at-most-one"
    assert all(reason["display"] for reason in card["overrideReasons"])
    assert "not for clinical use" in card["detail"]


def test_problem_card_is_info_and_short():
    card = problem_card("x" * 300, "detail", "http://x")
    assert card.indicator == "info" and len(card.summary) < 140
