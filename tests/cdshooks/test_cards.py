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


def test_selection_behavior_follows_the_setting():
    import pytest

    report = {"resourceType": "DiagnosticReport"}
    assert to_json(finding_card(findings(), report, "http://x"))["selectionBehavior"] == "at-most-one"
    card = to_json(finding_card(findings(), report, "http://x", selection_behavior="any"))
    assert card["selectionBehavior"] == "any"
    with pytest.raises(ValueError, match="selectionBehavior"):
        finding_card(findings(), report, "http://x", selection_behavior="all")


def test_a_finding_card_on_a_full_size_phantom_stays_small(dicom_store):
    """The card JSON, DiagnosticReport included, ≤ 200 kB; its one embedded image ≤ 150 kB."""
    import base64
    from datetime import UTC, datetime

    import numpy as np
    import pydicom

    from cds_service.dicom.decode import decode_dataset
    from cds_service.dicom.preprocess import display_image
    from cds_service.explain.heatmap import HipHeatmap, heat_canvas, render_overlay_png
    from cds_service.fhir.report import ReportContext, diagnostic_report_json
    from cds_service.fhir.validate import problems

    image = decode_dataset(pydicom.dcmread(next(dicom_store.rglob("*.dcm"))))
    display = display_image(image)
    rows, cols = image.grey.shape
    y, x = np.mgrid[0:28, 0:28] / 27
    cam = np.exp(-((y - 0.55) ** 2 + (x - 0.35) ** 2) / 0.03).astype(np.float32)
    hips = [
        HipHeatmap("R", cam, False, (0, 0, cols // 2, rows)),
        HipHeatmap("L", cam * 0.1, True, (cols // 2, 0, cols, rows)),
    ]
    heat = heat_canvas(hips, image.grey.shape, display.shape)
    overlay = render_overlay_png(display, hips, image.grey.shape, heat=heat)  # as the pipeline renders it
    context = ReportContext("p1", "study-1", "ServiceRequest/o1", "e1", "2026-11-23T09:15:00")
    resource = diagnostic_report_json(findings(), context, overlay, issued=datetime(2026, 11, 23, tzinfo=UTC))
    assert problems(resource) == []
    card = json.dumps(to_json(finding_card(findings(), resource, "http://x", viewer_url="http://x/viewer/t")))
    media = next(r for r in resource["contained"] if r["resourceType"] == "Media")
    embedded = base64.b64decode(media["content"]["data"])
    print(f"overlay PNG {len(overlay)} B at {display.shape[::-1]}; chart image {len(embedded)} B; card {len(card)} B")
    assert len(embedded) <= 150_000 and max(media["width"], media["height"]) <= 1024
    assert len(card.encode()) <= 200_000
    assert card.count(media["content"]["data"]) == 1 and "presentedForm" not in card
