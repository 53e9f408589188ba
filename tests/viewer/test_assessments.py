"""The clinicians' assessments on the viewer page of the result and its FHIR export (signed token)."""

from __future__ import annotations

import json
import logging

from fhir.resources.R4B.bundle import Bundle

from cds_service.cdshooks import cards
from cds_service.cdshooks.feedback import FeedbackStore, parse_feedback
from cds_service.fhir.report import ReportContext, diagnostic_report_json
from cds_service.viewer import viewer_link
from tests.cdshooks.test_conformance import auth
from tests.test_end_to_end import hook_request, post
from tests.viewer.conftest import SECRET, _run, stored_key
from tests.viewer.test_routes import path_of

PATIENT, STUDY_ID = "pat-assess-1", "study-assess-1"


def feedback(card: str, outcome: str, stamp: str, reason: str | None = None, comment: str | None = None) -> bytes:
    entry: dict = {"card": card, "outcome": outcome, "outcomeTimestamp": stamp}
    if outcome == "accepted":
        entry["acceptedSuggestions"] = [{"id": "suggestion"}]
    else:
        entry["overrideReason"] = {"reason": {"system": cards.OVERRIDE_SYSTEM, "code": reason}}
        if comment:
            entry["overrideReason"]["userComment"] = comment
    return json.dumps({"feedback": [entry]}).encode()


def issue_card(settings, store, analysis, key=None) -> tuple[cards.Card, str]:
    """A finding card for ``analysis`` as the pipeline builds it (report, viewer link), recorded as issued."""
    key = key or stored_key(store, analysis)
    url = _run(viewer_link(settings, store, key))
    report = diagnostic_report_json(analysis.findings, ReportContext(PATIENT, STUDY_ID), b"png")
    card = cards.finding_card(analysis.findings, report, settings.base_url(), viewer_url=url)
    FeedbackStore(store.sql, SECRET.encode()).record_cards("svc", [card], report)
    return card, url


def test_each_assessment_is_on_the_result_page_and_in_its_fhir_export(
    viewer_client, viewer_settings, store, analysis, caplog
):
    caplog.set_level(logging.DEBUG)
    key = stored_key(store, analysis)
    first, url = issue_card(viewer_settings, store, analysis, key)
    second, later_url = issue_card(viewer_settings, store, analysis, key)  # the card shown again, on a later hook
    feedbacks = FeedbackStore(store.sql)
    feedbacks.add("svc", parse_feedback(feedback(first.uuid, "accepted", "2026-11-22T10:05:00Z")).feedback)
    body = feedback(second.uuid, "overridden", "2026-11-22T10:40:00Z", "disagree", "Lateral view normal")
    feedbacks.add("svc", parse_feedback(body).feedback)

    for link in (url, later_url):  # any link to the result shows every assessment of it
        page = viewer_client.get(path_of(link))
        assert page.status_code == 200
        section = page.text.split("id='assessments'", 1)[1].split("</section>", 1)[0]
        assert "Accepted by the clinician at <time datetime='2026-11-22T10:05:00+00:00'>2026-11-22 10:05 UTC" in section
        assert "Overridden: Disagree with the AI finding, at" in section and "10:40 UTC" in section
        assert "<q>Lateral view normal</q>" in section
        assert section.index("Accepted") < section.index("Overridden")  # oldest first

    export = viewer_client.get(path_of(url) + "/assessments")
    assert export.status_code == 200 and export.headers["content-type"] == "application/fhir+json"
    assert export.headers["cache-control"] == "no-store"
    bundle = export.json()
    Bundle.model_validate(bundle)
    observations = [entry["resource"] for entry in bundle["entry"]]
    assert [o["valueCodeableConcept"]["text"] for o in observations] == [
        "Accepted",
        "Overridden: Disagree with the AI finding",
    ]
    report_ids = {o["focus"][0]["reference"] for o in observations}
    assert report_ids == {f"DiagnosticReport/{first.suggestions[0].actions[0].resource['id']}"}
    assert {o["derivedFrom"][0]["reference"] for o in observations} == {f"ImagingStudy/{STUDY_ID}"}
    logged = caplog.text
    for secret in (PATIENT, STUDY_ID, "Lateral view normal", analysis.study.accession):
        assert secret not in logged


def test_a_result_nobody_assessed_says_so_and_other_results_stay_apart(viewer_client, viewer_settings, store, analysis):
    card, _ = issue_card(viewer_settings, store, analysis)
    FeedbackStore(store.sql).add(
        "svc", parse_feedback(feedback(card.uuid, "accepted", "2026-11-22T10:05:00Z")).feedback
    )
    _, other = issue_card(viewer_settings, store, analysis)  # another result (a fresh key)
    page = viewer_client.get(path_of(other)).text
    assert "No assessment recorded" in page and "Accepted by the clinician" not in page
    assert "entry" not in viewer_client.get(path_of(other) + "/assessments").json()


def test_feedback_on_a_card_the_service_never_issued_is_shown_nowhere(viewer_client, viewer_settings, store, analysis):
    _, url = issue_card(viewer_settings, store, analysis)
    body = feedback("not-a-card-we-issued", "overridden", "2026-11-22T10:05:00Z", "disagree")
    assert FeedbackStore(store.sql).add("svc", parse_feedback(body).feedback) == 1  # counted
    assert "No assessment recorded" in viewer_client.get(path_of(url)).text


def test_an_altered_token_exports_nothing(viewer_client, viewer_settings, store, analysis):
    _, url = issue_card(viewer_settings, store, analysis)
    path = path_of(url)
    altered = path[:-2] + ("A" if path[-2] != "A" else "B") + path[-1]
    answer = viewer_client.get(altered + "/assessments")
    assert answer.status_code == 403 and "application/fhir+json" not in answer.headers["content-type"]


def test_real_hook_feedback_reaches_the_viewer_page(make_service, ehr_keys, dicom_store, caplog):
    """The whole path on the real app (Triton, JWT, store): hook → card → feedback → viewer → FHIR."""
    caplog.set_level(logging.DEBUG)
    service = make_service(card_link="absolute")  # the test opens the card's signed viewer link itself
    card = post(service, ehr_keys[0], hook_request(dicom_store)).json()["cards"][0]
    path = "/cds-services/hip-fracture-order-select/feedback"
    body = json.loads(feedback(card["uuid"], "overridden", "2026-11-22T10:05:00Z", "reviewed-by-radiology"))
    assert service.post(path, json=body, headers=auth(service, ehr_keys[0], path)).status_code == 200
    unknown = json.loads(feedback("card-from-elsewhere", "accepted", "2026-11-22T10:06:00Z"))
    assert service.post(path, json=unknown, headers=auth(service, ehr_keys[0], path)).status_code == 200
    viewer = path_of(card["links"][0]["url"])
    page = service.get(viewer).text
    assert "Overridden: Already reviewed by radiology, at" in page and "Accepted by the clinician" not in page
    (observation,) = [entry["resource"] for entry in service.get(viewer + "/assessments").json()["entry"]]
    assert observation["valueCodeableConcept"]["text"] == "Overridden: Already reviewed by radiology"
    report = card["suggestions"][0]["actions"][0]["resource"]
    assert observation["focus"][0]["reference"] == f"DiagnosticReport/{report['id']}"
    assert observation["derivedFrom"] == [{"reference": report["imagingStudy"][0]["reference"]}]
    assert "pat-hip-1" not in caplog.text


def test_a_smart_link_card_and_an_absolute_one_name_the_same_result(viewer_settings, store, analysis):
    url = _run(viewer_link(viewer_settings, store, stored_key(store, analysis)))
    report = diagnostic_report_json(analysis.findings, ReportContext(PATIENT, STUDY_ID), b"png")
    recorder = FeedbackStore(store.sql, SECRET.encode())
    issued = [
        recorder.issued(cards.finding_card(analysis.findings, report, viewer_settings.base_url(), url, link_type=kind))
        for kind in ("absolute", "smart")
    ]
    assert issued[0].viewer_link and issued[0].viewer_link == issued[1].viewer_link
    assert issued[0].imaging_study == f"ImagingStudy/{STUDY_ID}"
    foreign = FeedbackStore(store.sql, b"another key").issued(cards.finding_card(analysis.findings, report, "", url))
    assert foreign.viewer_link is None and foreign.report is None  # a link we cannot verify names no result
