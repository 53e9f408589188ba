"""Card wording and tiers (cds_service.cdshooks.cards): two operating points, sites, bounded percentages,
failure cards without internal detail, the PACS sentence only for a PACS, the viewer link (smart by
default, absolute as the fallback)."""

import dataclasses
import json

import numpy as np
import pytest

from cds_service.cdshooks.cards import (
    UNAVAILABLE_REASONS,
    card_shown,
    detail_markdown,
    finding_card,
    problem_card,
    stored_in_pacs,
    summary_and_indicator,
    unavailable_card,
)
from cds_service.cdshooks.models import Card, to_json
from cds_service.domain import FEMORAL_NECK, TROCHANTERIC, UNCERTAIN_SITE, Analysis, HipFinding, StudyFindings
from cds_service.explain.heatmap import ChartImage, png_bytes
from cds_service.fhir.report import ReportContext
from cds_service.pipeline import AnalysisPipeline
from cds_service.settings import Settings
from cds_service.viewer.routes import viewer_secret
from cds_service.viewer.signing import verify
from tests.findings_factory import findings
from tests.test_end_to_end import hook_request, post

DISPLACED = (0.02, 0.04, 0.64, 0.30)
UNDISPLACED = (0.6, 0.3, 0.05, 0.05)
OPERATING, HIGH = 0.04, 0.16  # the shipped fracture model's points: sensitivity 95 %, then specificity ≥ 96.9 %


def study(
    right: float = 0.94,
    site: str = FEMORAL_NECK,
    garden: tuple[float, float, float, float] = DISPLACED,
    left: float = 0.01,
    high: float | None = HIGH,
    temperature: float = 0.78,
    training_data: str = "synthetic-phantoms",
) -> StudyFindings:
    """Findings as a calibrated, site-aware model with both operating points would give them."""
    base = findings(training_data=training_data)
    fracture = dataclasses.replace(
        base.fracture_model,
        operating_threshold=OPERATING,
        high_specificity_threshold=high,
        temperature=temperature,
        calibration_prevalence=0.45 if temperature != 1.0 else None,
    )
    garden_model = dataclasses.replace(base.garden_model, temperature=temperature)

    def low(p: float) -> bool:  # as cds_service.findings.interpret marks it
        return high is not None and OPERATING <= p < max(high, OPERATING)

    hips = [
        HipFinding("R", right, right >= OPERATING, garden, site, low_suspicion=low(right)),
        HipFinding("L", left, left >= OPERATING, (0.25, 0.25, 0.25, 0.25), site, low_suspicion=low(left)),
    ]
    return dataclasses.replace(base, hips=hips, fracture_model=fracture, garden_model=garden_model)


# Tiers ----------------------------------------------------------------------------------------------
def test_a_displaced_neck_fracture_above_the_high_specificity_point_is_critical():
    summary, indicator = summary_and_indicator(study())
    assert indicator == "critical"
    assert summary == "AI: suspected displaced right femoral neck fracture (Garden III–IV), p ≈ 94 %"


def test_an_undisplaced_neck_fracture_is_a_warning():
    summary, indicator = summary_and_indicator(study(garden=UNDISPLACED))
    assert indicator == "warning" and "Garden I–II" in summary


@pytest.mark.parametrize(
    ("site", "named"), [(TROCHANTERIC, "trochanteric fracture"), (UNCERTAIN_SITE, "site uncertain")]
)
def test_a_fracture_not_at_the_femoral_neck_gets_no_garden_stage(site, named):
    """Today's two-class models give every hip an uncertain site: a warning, no Garden stage anywhere."""
    found = study(site=site)
    summary, indicator = summary_and_indicator(found)
    detail = detail_markdown(found)
    assert indicator == "warning" and named in summary and "Garden" not in summary
    assert "64 %" not in detail and "displaced" not in detail.lower()  # no Garden figures, no displacement
    assert "| right | 94 % | suspected fracture |" in detail and "no Garden stage" in detail


def test_garden_percentages_are_labelled_conditional_on_a_neck_fracture():
    detail = detail_markdown(study())
    assert "Garden I / II / III / IV, if a femoral-neck fracture" in detail
    assert "| right | 94 % | suspected fracture | femoral neck | 2 % / 4 % / 64 % / 30 % (displaced 94 %) |" in detail
    assert "| left | 1 % | not suspected | – | – |" in detail  # no Garden figures for a hip with no fracture


def test_a_probability_between_the_two_points_is_a_low_suspicion_info_card():
    found = study(right=0.06, site=UNCERTAIN_SITE)
    summary, indicator = summary_and_indicator(found)
    assert indicator == "info"
    assert summary == "AI: low suspicion of a right hip fracture (p ≈ 6 %) — review the image"
    assert "| right | 6 % | low suspicion |" in detail_markdown(found)
    assert card_shown(found) and not card_shown(found, low_suspicion_cards=False)


def test_a_low_suspicion_beside_a_fracture_shows_no_site_and_no_garden_figures():
    """The demo's normal left hip (8 %, 'femoral neck' given a fracture) showed Garden II at 86 %."""
    found = study(right=0.94, left=0.08, site=FEMORAL_NECK)
    detail = detail_markdown(found)
    assert "| left | 8 % | low suspicion | – | – |" in detail
    assert "| right | 94 % | suspected fracture | femoral neck |" in detail
    assert "A low suspicion names no fracture site and no Garden stage" in detail


def test_below_the_operating_point_is_no_suspicion():
    found = study(right=0.03)
    assert summary_and_indicator(found) == ("AI: no hip fracture suspected (highest p ≈ 3 %)", "info")
    assert card_shown(found, low_suspicion_cards=False) and not card_shown(found, negative_card=False)


def test_without_a_high_specificity_point_a_fracture_is_a_warning_and_the_card_says_so():
    found = study(right=0.06, high=None)
    assert summary_and_indicator(found)[1] == "warning"
    assert summary_and_indicator(study(high=None))[1] == "warning"  # a displaced neck fracture too: never critical
    assert "stores no high-specificity operating point" in detail_markdown(found)


def test_the_detail_states_both_operating_points():
    detail = detail_markdown(study())
    assert "fracture suspected at p ≥ 4.0 % (validation sensitivity 95 %, specificity 97 %)" in detail
    assert "only at p ≥ 16.0 % (the high-specificity operating point)" in detail


@pytest.mark.parametrize(("training_data", "temperature"), [("untrained", 1.0), ("synthetic-phantoms", 1.0)])
def test_an_untrained_or_uncalibrated_model_is_never_critical(training_data, temperature):
    found = study(right=0.999, training_data=training_data, temperature=temperature)
    summary, indicator = summary_and_indicator(found)
    assert indicator == "warning" and "displaced right femoral neck fracture" in summary
    assert "not calibrated" in detail_markdown(found)
    assert summary.startswith("UNTRAINED model") == (training_data == "untrained")


def test_certainties_are_bounded():
    found = study(right=0.999, left=0.001)
    summary, _ = summary_and_indicator(found)
    assert summary.endswith("p > 99 %")
    detail = detail_markdown(found)
    assert "| right | > 99 % |" in detail and "| left | < 1 % |" in detail
    assert "100 %" not in summary + detail and " 0 %" not in detail


def test_the_other_hip_is_mentioned_by_its_own_tier():
    both = study(left=0.95)
    assert summary_and_indicator(both)[0].endswith("; also other side")
    low = study(left=0.06)
    assert summary_and_indicator(low)[0].endswith("; other side: low suspicion")


# Failure cards ----------------------------------------------------------------------------------------
TRITON_DOWN = (
    "Triton metadata for model 'hip_analysis' failed with UNAVAILABLE after 5 attempts in 1.6 s at "
    "127.0.0.1:47199: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:47199: "
    "Failed to connect to remote host: Connection refused"
)


@pytest.mark.parametrize("code", sorted(UNAVAILABLE_REASONS))
def test_a_failure_card_gives_its_reason_code_and_what_to_do(code):
    card = unavailable_card(code, "http://x")
    assert card.indicator == "info" and "unavailable" in card.summary
    assert f"`{code}`" in card.detail and "Review the images yourself" in card.detail


def test_free_text_never_reaches_a_failure_card():
    card = to_json(unavailable_card(TRITON_DOWN, "http://x"))
    text = json.dumps(card)
    for leaked in ("127.0.0.1", "47199", "UNAVAILABLE", "Triton", "hip_analysis", "Connection refused"):
        assert leaked not in text
    assert "`internal-error`" in card["detail"]
    assert "`internal-error`" in unavailable_card("internal error", "http://x").detail  # app.py's last resort


def test_the_service_errors_carry_the_card_codes():
    from cds_service.errors import InferenceError, StudyUnavailableError, UnusableImageError

    for error in (InferenceError, StudyUnavailableError, UnusableImageError):
        assert error.reason_code in UNAVAILABLE_REASONS and error.reason_code != "internal-error"


# The PACS sentence ----------------------------------------------------------------------------------
FOLDER_URL = "file:///var/dicom/studies/1.2/series/1.3/instances/1.4"
PACS_URL = "http://orthanc:8042/dicom-web/studies/1.2/series/1.3/instances/1.4"


def test_only_a_stow_to_a_pacs_counts_as_in_the_pacs():
    assert stored_in_pacs([PACS_URL]) and stored_in_pacs([FOLDER_URL, PACS_URL.replace("http", "https", 1)])
    assert not stored_in_pacs([FOLDER_URL]) and not stored_in_pacs([])


def _pipeline(tmp_path, **changes: object) -> AnalysisPipeline:
    settings = Settings(feedback_db=tmp_path / "store.sqlite3", dicom_folder=tmp_path, **changes)
    return AnalysisPipeline.from_settings(settings)  # the Triton client connects only on first use


def _analysis(found: StudyFindings, stored: tuple[str, ...] = ()) -> Analysis:
    grey = np.full((64, 64), 128, np.uint8)
    chart = ChartImage(png_bytes(grey), "image/png", (64, 64))
    return Analysis(found, chart, grey.shape, [], grey, np.zeros_like(grey), stored)


def _card(pipeline: AnalysisPipeline, analysis: Analysis) -> Card | None:
    """The hook's report stage, then its card stage (as ``AnalysisPipeline._answer`` runs them)."""
    report = pipeline.report(analysis, ReportContext("p1", "study-1", effective="2026-11-23T09:15:00Z"))
    return pipeline.card(analysis, report)


@pytest.mark.parametrize(("stored", "sentence"), [((FOLDER_URL,), False), ((PACS_URL,), True), ((), False)])
def test_the_pipeline_says_in_the_pacs_only_after_a_stow_to_a_pacs(tmp_path, stored, sentence):
    card = _card(_pipeline(tmp_path), _analysis(study(), stored))
    assert card is not None and ("also in the PACS" in card.detail) == sentence


def test_the_pipeline_drops_a_low_suspicion_card_when_the_site_switches_them_off(tmp_path):
    low = _analysis(study(right=0.06))
    assert _card(_pipeline(tmp_path), low).indicator == "info"
    switched_off = _pipeline(tmp_path, low_suspicion_cards=False)
    assert _card(switched_off, low) is None
    assert _card(switched_off, _analysis(study())).indicator == "critical"


# The card as JSON ----------------------------------------------------------------------------------------


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
    assert card.count(media["content"]["data"]) == 1  # the image once (presentedForm is the text report)


# The card's viewer link (HIPCAD_CARD_LINK) -------------------------------------------------------------


def test_the_default_card_link_is_a_smart_launch_and_absolute_the_signed_viewer_url():
    viewer = "http://x/viewer/tok.en"
    assert Settings().card_link == "smart"
    (link,) = to_json(finding_card(findings(), {"resourceType": "DiagnosticReport"}, "http://x", viewer))["links"]
    assert link["type"] == "smart" and link["url"] == "http://x/smart/launch"  # one static, registrable URL
    assert json.loads(link["appContext"]) == {"hipcadViewerToken": "tok.en", "viewerPath": "/viewer/tok.en"}
    card = finding_card(findings(), {"resourceType": "DiagnosticReport"}, "http://x", viewer, link_type="absolute")
    assert to_json(card)["links"] == [{"label": "View heat map", "url": viewer, "type": "absolute"}]


def test_the_services_default_card_launches_the_viewer_with_the_result_in_app_context(
    make_service, ehr_keys, dicom_store
):
    """The real app on the real Triton: the default card's link is the SMART launch URL and its
    ``appContext`` names the result the viewer opens; ``absolute`` gives that result's signed viewer URL."""
    service = make_service()
    base = str(service.base_url).rstrip("/")
    answer = post(service, ehr_keys[0], hook_request(dicom_store))
    assert answer.status_code == 200, answer.text
    (link,) = answer.json()["cards"][0]["links"]
    assert link["type"] == "smart" and link["url"] == f"{base}/smart/launch"
    context = json.loads(link["appContext"])
    secret = viewer_secret(service.app.state.pipeline.settings)
    assert verify(context["hipcadViewerToken"], secret)  # a genuine, live viewer token naming the result
    assert context["viewerPath"] == f"/viewer/{context['hipcadViewerToken']}"
    page = service.get(context["viewerPath"])
    assert page.status_code == 200 and "heat map" in page.text.lower()

    fallback = make_service(card_link="absolute")
    (absolute,) = post(fallback, ehr_keys[0], hook_request(dicom_store)).json()["cards"][0]["links"]
    assert absolute["type"] == "absolute" and "appContext" not in absolute
    assert absolute["url"].startswith(f"{base}/viewer/")
    assert verify(absolute["url"].rsplit("/", 1)[-1], secret)  # the signed viewer URL itself
    assert fallback.get(absolute["url"].removeprefix(base)).status_code == 200
