import base64
import dataclasses
import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from PIL import Image

from cds_service.dicom.stow import instance_url, result_instance_uid, result_series_uid
from cds_service.domain import FEMORAL_NECK, TROCHANTERIC, UNCERTAIN_SITE
from cds_service.explain.heatmap import png_bytes
from cds_service.fhir.report import ReportContext, diagnostic_report_json
from cds_service.fhir.validate import problems
from cds_service.findings import HipFinding
from tests.findings_factory import findings

PNG = png_bytes(np.full((30, 40, 3), 90, np.uint8))  # small: embedded as it is


def report_model(*args, **kwargs) -> DiagnosticReport:
    """The report the card carries, read back as a ``fhir.resources`` model."""
    return DiagnosticReport.model_validate(diagnostic_report_json(*args, **kwargs))


ISSUED = datetime(2026, 11, 22, tzinfo=UTC)


def build(effective: str | None = "2026-11-20T10:15:00Z", overlay: bytes = PNG, **kw) -> DiagnosticReport:
    context = ReportContext("p1", "study-1", "ServiceRequest/o1", "e1", effective, based_on=("ServiceRequest/done",))
    return report_model(findings(**kw), context, overlay, issued=ISSUED)


def with_sites(*sites: str):
    """The factory's findings with both hips fractured, at these sites (right, left)."""
    base = findings(left=0.7)
    hips = [
        HipFinding(h.laterality, h.fracture_probability, True, h.garden_probabilities, site)
        for h, site in zip(base.hips, sites, strict=True)
    ]
    return dataclasses.replace(base, hips=hips)


def observations(report: dict) -> dict[str, dict]:
    return {r["id"]: r for r in report["contained"] if r["resourceType"] == "Observation"}


def test_report_round_trips_through_json_as_r4b():
    report = build()
    again = DiagnosticReport.model_validate_json(report.model_dump_json())
    assert again.status == "preliminary"
    assert again.category[0].coding[0].code == "RAD"
    assert again.basedOn[0].reference == "ServiceRequest/done"
    assert again.imagingStudy[0].reference == "ImagingStudy/study-1"


def test_heat_map_is_carried_once_in_the_media_not_in_presented_form():
    report = build()
    assert [form.contentType for form in report.presentedForm] == ["text/html"]
    media = next(r for r in report.contained if r.get_resource_type() == "Media")
    assert media.content.data == PNG  # fhir.resources holds base64Binary decoded
    dumped = json.dumps(report.model_dump(mode="json"))
    assert dumped.count(base64.b64encode(PNG).decode()) == 1


def test_one_observation_per_hip_with_coded_laterality_and_the_suspicion():
    report = build()
    by_id = {o.id: o for o in report.contained if o.get_resource_type() == "Observation"}
    assert list(by_id) == ["hip0", "hip1"]  # today's models give no site: no Garden Observation
    right, left = by_id["hip0"], by_id["hip1"]
    assert [o.bodySite.text for o in (right, left)] == ["Right hip", "Left hip"]
    assert right.bodySite.coding[0].code == "24136001:272741003=24028007"
    assert left.bodySite.coding[0].code == "24136001:272741003=7771000"
    assert (right.code.coding[0].system, right.code.coding[0].code) == ("http://snomed.info/sct", "359817006")
    assert right.valueCodeableConcept.coding[0].code == "415684004"  # Suspected
    assert left.valueCodeableConcept.coding[0].code == "260385009"  # Negative
    assert [r.reference for r in report.result] == ["#hip0", "#hip1"]
    for observation in (right, left):
        assert [d.reference for d in observation.derivedFrom] == ["ImagingStudy/study-1", "#heatmap"]
        assert observation.device.reference == "#ai-device"


@pytest.mark.parametrize("site", [TROCHANTERIC, UNCERTAIN_SITE])
def test_a_trochanteric_or_uncertain_site_fracture_gets_no_garden_stage(site):
    report = diagnostic_report_json(with_sites(site, site), ReportContext("p1", "study-1"), PNG, issued=ISSUED)
    assert set(observations(report)) == {"hip0", "hip1"}
    assert "garden" not in json.dumps(report["result"]).lower()
    assert "Garden I" not in report["conclusion"] and "no Garden stage" in report["conclusion"]
    assert all(o["code"]["coding"][0]["code"] == "359817006" for o in observations(report).values())


def test_a_femoral_neck_fracture_gets_a_garden_observation_labelled_conditional():
    report = diagnostic_report_json(
        with_sites(FEMORAL_NECK, TROCHANTERIC), ReportContext("p1", "study-1"), PNG, issued=ISSUED
    )
    by_id = observations(report)
    assert set(by_id) == {"hip0", "hip1", "garden0"}  # the trochanteric left hip has none
    garden = by_id["garden0"]
    assert "conditional on a femoral-neck fracture" in garden["code"]["text"]
    assert "conditional on a femoral-neck fracture" in garden["valueCodeableConcept"]["text"]
    assert garden["valueCodeableConcept"]["coding"][0]["code"] == "garden-III"
    assert [c["valueQuantity"]["value"] for c in garden["component"]] == [2.0, 4.0, 64.0, 30.0, 94.0]
    assert {"reference": "#hip0"} in garden["derivedFrom"]
    assert by_id["hip0"]["code"]["coding"][0]["code"] == "359820003"  # closed fracture of neck of femur
    assert "Garden III, conditional on a femoral-neck fracture" in report["conclusion"]
    assert [r["reference"] for r in report["result"]] == ["#hip0", "#garden0", "#hip1"]
    DiagnosticReport.model_validate(report)


def test_ai_asserted_is_a_security_label_not_a_tag():
    report = build()
    assert "not for clinical use" in report.conclusion.lower()
    assert [(c.system, c.code) for c in report.meta.security] == [
        ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "AIAST")
    ]
    assert report.meta.tag is None
    assert all(r.meta is None for r in report.contained)  # contained resources inherit it (dom-5)


def test_presented_form_and_narrative_say_what_the_ai_found_and_that_it_is_not_for_clinical_use():
    report = build()
    document = report.presentedForm[0].data.decode()
    assert report.text.status == "generated" and report.text.div.startswith(
        '<div xmlns="http://www.w3.org/1999/xhtml">'
    )
    for text in (document, report.text.div):
        assert "Not for clinical use" in text and "artificial-intelligence system" in text
        assert "Right hip" in text and "94 %" in text and "Left hip" in text


def test_the_device_has_type_manufacturer_model_and_a_typed_version_per_model():
    device = next(r for r in build().contained if r.get_resource_type() == "Device")
    assert device.type.coding[0].code == "Artificial-Intelligence"
    assert device.manufacturer and device.modelNumber == "fracture@1+garden@1"
    assert [v.type.coding[0].code for v in device.version] == ["software-version", "111003", "111003"]
    assert [v.value for v in device.version[1:]] == ["1", "1"]
    assert (
        "Fracture model fracture" in device.version[1].type.text
        and "Garden model garden" in device.version[2].type.text
    )


def test_heat_map_media_is_coded_as_a_visual_explanation():
    report = build()
    media = next(r for r in report.contained if r.get_resource_type() == "Media")
    assert media.modality.coding[0].system == "http://dicom.nema.org/resources/ontology/DCM"
    assert media.modality.coding[0].code == "130401"
    assert media.content.contentType == "image/png" and media.content.data == PNG
    assert (media.width, media.height) == (40, 30)
    assert report.media[0].link.reference == "#heatmap"


def test_conclusion_code_is_the_suspicion_only_when_a_fracture_is_suspected():
    coding = build().conclusionCode[0].coding[0]
    assert coding.code.startswith("413350009:{246090004=359817006,")  # finding with explicit context
    assert "408729009=415684004" in coding.code  # finding context: suspected
    assert coding.display == "Suspected closed fracture of hip"
    assert build(right=0.1).conclusionCode is None


def test_report_code_is_loinc_xr_pelvis_and_hip():
    coding = build().code.coding[0]
    assert (coding.system, coding.code) == ("http://loinc.org", "30768-6")


def test_a_full_size_overlay_is_embedded_chart_sized(tmp_path):
    noisy = np.random.default_rng(0).integers(0, 256, (1380, 2039, 3), dtype=np.uint8)
    report = build(overlay=png_bytes(noisy))
    media = next(r for r in report.contained if r.get_resource_type() == "Media")
    assert media.content.contentType == "image/jpeg" and len(media.content.data) <= 150_000
    image = Image.open(io.BytesIO(media.content.data))
    assert image.size == (media.width, media.height) and max(image.size) <= 1024
    assert problems(report.model_dump(mode="json", exclude_none=True)) == []


@pytest.mark.parametrize(
    ("started", "effective"),
    [
        ("2026-11-20T09:15:00", "2026-11-20T09:15:00+00:00"),  # no zone: the configured one (UTC here)
        ("2026-11-20T09:15:00.123", "2026-11-20T09:15:00+00:00"),
        ("2026-11-20", "2026-11-20"),
        ("20261120", "2026-11-20"),  # DICOM DA
        ("2026-11", "2026-11"),
        ("2026-11-20T09:15:00+01:00", "2026-11-20T09:15:00+01:00"),
        ("2026-11-23T09:15:00Z", "2026-11-22T00:00:00+00:00"),  # after issued: issued stands in
        ("2026-11-23", "2026-11-22T00:00:00+00:00"),
        ("yesterday", "2026-11-22T00:00:00+00:00"),  # not a date: issued
        ("", "2026-11-22T00:00:00+00:00"),
        (None, "2026-11-22T00:00:00+00:00"),
    ],
)
def test_effective_is_always_present_and_never_after_issued(started, effective):
    context = ReportContext("p1", "study-1", effective=started)
    dumped = diagnostic_report_json(findings(), context, PNG, issued=ISSUED)
    assert dumped["effectiveDateTime"] == effective
    assert all(o["effectiveDateTime"] == effective for o in observations(dumped).values())


def test_based_on_is_the_imaging_studys_own_order_never_the_draft_order():
    report = build()
    assert [r.reference for r in report.basedOn] == ["ServiceRequest/done"]
    assert "ServiceRequest/o1" not in report.model_dump_json()
    unordered = diagnostic_report_json(findings(), ReportContext("p1", "study-1", "ServiceRequest/o1"), PNG)
    assert "basedOn" not in unordered


def test_the_media_title_does_not_promise_full_resolution():
    media = next(r for r in build().contained if r.get_resource_type() == "Media")
    assert "full resolution" not in media.content.title


BASE = "https://pacs.example.org/dicom-web"


def _stored(base: str = BASE, study: str = "1.2.3", source: str = "1.2.3.4.5") -> list[str]:
    """The WADO-RS URLs store_results returns for one analysis' SR and SC."""
    urls = []
    for kind in ("sr", "sc"):
        series = result_series_uid(study, "fracture@1+garden@1", source, kind)
        urls.append(instance_url(base, study, series, result_instance_uid(series, kind)))
    return urls


def _pacs_study(report: DiagnosticReport) -> tuple[dict, dict] | None:
    """(ImagingStudy, Endpoint) of the results in the PACS, resolved as a FHIR client would, or None."""
    dumped = report.model_dump(mode="json", exclude_none=True)
    contained = {f"#{r['id']}": r for r in dumped["contained"]}
    studies = [contained[ref["reference"]] for ref in dumped.get("imagingStudy", []) if ref["reference"] in contained]
    if not studies:
        return None
    (study,) = studies
    (endpoint,) = (contained[ref["reference"]] for ref in study["endpoint"])
    return study, endpoint


def test_objects_stored_in_the_pacs_are_linked_by_imaging_study_and_wado_rs_endpoint():
    stored = _stored()
    context = ReportContext("p1", "study-1", "ServiceRequest/o1", "e1", "2026-11-20")
    report = report_model(findings(), context, PNG, stored_in_pacs=stored)
    assert [r.reference for r in report.imagingStudy] == ["ImagingStudy/study-1", "#pacs-results"]
    study, endpoint = _pacs_study(report)
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs" and endpoint["status"] == "active"
    assert endpoint["address"] == BASE
    assert study["identifier"] == [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}]
    assert study["subject"]["reference"] == "Patient/p1" and study["status"] == "available"
    # The WADO-RS URL of every object, built the R4 way: Endpoint.address + /studies/…/series/…/instances/…
    urls = [
        f"{endpoint['address']}/studies/1.2.3/series/{series['uid']}/instances/{instance['uid']}"
        for series in study["series"]
        for instance in series["instance"]
    ]
    assert urls == stored
    kinds = {s["modality"]["code"]: s["instance"][0]["sopClass"]["code"] for s in study["series"]}
    assert kinds == {"SR": "urn:oid:1.2.840.10008.5.1.4.1.1.88.34", "OT": "urn:oid:1.2.840.10008.5.1.4.1.1.7"}
    dumped = report.model_dump(mode="json", exclude_none=True)
    assert problems(dumped) == []
    assert DiagnosticReport.model_validate_json(report.model_dump_json()).imagingStudy[1].reference == "#pacs-results"


def test_no_pacs_links_when_nothing_was_stored():
    report = build()
    assert [r.reference for r in report.imagingStudy] == ["ImagingStudy/study-1"]
    assert _pacs_study(report) is None
    kinds = {r.get_resource_type() for r in report.contained}
    assert kinds == {"Device", "Observation", "Media"}
    assert "/studies/" not in report.model_dump_json()


@pytest.mark.parametrize(
    "stored",
    [
        _stored(base="file:///var/lib/hipcad/images"),  # the local folder store: no EHR can reach it
        [instance_url(BASE, "1.2.3", "1.2.3.7", "1.2.3.8.1")],  # not an object this service wrote
        ["1.2.826.0.1.3680043.8.498.1"],  # a result cached before URLs were recorded: a bare UID
    ],
)
def test_only_reachable_result_objects_are_linked(stored):
    context = ReportContext("p1")
    report = report_model(findings(), context, PNG, stored_in_pacs=stored)
    assert report.imagingStudy is None and _pacs_study(report) is None


def test_stored_results_without_an_ehr_imaging_study_are_still_linked():
    report = report_model(findings(), ReportContext("p1"), PNG, stored_in_pacs=_stored())
    assert [r.reference for r in report.imagingStudy] == ["#pacs-results"]
    assert len(_pacs_study(report)[0]["series"]) == 2


def test_each_report_is_a_document_of_its_own():
    """The card's resource may be changed by whoever holds it; the next report is not (shared code constants)."""
    first = diagnostic_report_json(findings(), ReportContext("p1"), PNG)
    first["category"][0]["coding"][0]["system"] = "http://example.org/changed"
    second = diagnostic_report_json(findings(), ReportContext("p1"), PNG)
    assert second["category"][0]["coding"][0]["system"] != "http://example.org/changed"


def test_a_repeated_report_is_validated_once_and_issued_anew(monkeypatch):
    """Repeated hooks for one order reuse the validated report; only the issue time (ours) changes."""
    from cds_service.fhir import report as module

    calls = []
    validate = module.DiagnosticReport.model_validate
    monkeypatch.setattr(module, "_validated", module.OrderedDict())
    monkeypatch.setattr(module.DiagnosticReport, "model_validate", lambda r: calls.append(1) or validate(r))
    context = ReportContext("p1", "study-1", "ServiceRequest/o1")
    first = diagnostic_report_json(findings(), context, PNG, issued=datetime(2026, 11, 22, 8, tzinfo=UTC))
    again = diagnostic_report_json(findings(), context, PNG, issued=datetime(2026, 11, 22, 9, tzinfo=UTC))
    assert len(calls) == 1
    media = next(r for r in again["contained"] if r["resourceType"] == "Media")
    assert again["issued"] == media["issued"] == "2026-11-22T09:00:00+00:00"
    assert again["effectiveDateTime"] == "2026-11-22T09:00:00+00:00"  # no started, no acquisition: issued
    assert again["id"] == first["id"]  # same content, same id
    same = {"issued": first["issued"], "effectiveDateTime": first["effectiveDateTime"], "contained": None}
    assert {**again, **same} == {**first, "contained": None}

    # Anything else that shapes the report is validated and built anew: patient, findings, image, PACS links.
    other = diagnostic_report_json(findings(), ReportContext("p2", "study-1"), PNG)
    assert other["subject"]["reference"] == "Patient/p2"
    assert next(r for r in other["contained"] if r["resourceType"] == "Media")["subject"]["reference"] == "Patient/p2"
    assert diagnostic_report_json(findings(right=0.2), context, PNG)["conclusion"] != first["conclusion"]
    assert (
        diagnostic_report_json(findings(), context, png_bytes(np.zeros((8, 8, 3), np.uint8)))["contained"]
        != (first["contained"])
    )
    assert "#pacs-results" in json.dumps(diagnostic_report_json(findings(), context, PNG, stored_in_pacs=_stored()))
    assert len(calls) == 5


def test_the_validated_reports_are_bounded(monkeypatch):
    from cds_service.fhir import report as module

    monkeypatch.setattr(module, "_validated", module.OrderedDict())
    for i in range(module.VALIDATED_REPORTS + 5):
        diagnostic_report_json(findings(), ReportContext(f"p{i}"), PNG)
    assert len(module._validated) == module.VALIDATED_REPORTS


def test_a_low_suspicion_is_reported_as_one_with_no_site_no_stage_and_no_conclusion_code_beside_a_fracture():
    """As the card tiers it: the demo's normal left hip at 8 % was 'fracture suspected … Garden II' here."""
    base = findings(left=0.7)
    right = HipFinding("R", 0.94, True, base.hips[0].garden_probabilities, FEMORAL_NECK)
    left = HipFinding("L", 0.08, True, (0.01, 0.86, 0.13, 0.0), UNCERTAIN_SITE, low_suspicion=True)
    report = diagnostic_report_json(
        dataclasses.replace(base, hips=[right, left]), ReportContext("p1", "study-1"), PNG, issued=ISSUED
    )
    by_id = observations(report)
    assert set(by_id) == {"hip0", "garden0", "hip1"}  # no Garden observation for the low suspicion
    assert by_id["hip1"]["valueCodeableConcept"]["text"].startswith("Low suspicion of fracture")
    assert "Left hip: low suspicion of fracture (8 %" in report["conclusion"]
    left_sentence = report["conclusion"].split("Left hip:")[1]
    assert "Garden" not in left_sentence.replace("No site or Garden stage given", "")
    # The conclusion codes the suspected neck fracture only, not the low suspicion beside it.
    assert len(report["conclusionCode"]) == 1 and "359820003" in report["conclusionCode"][0]["coding"][0]["code"]
    assert "<td>low suspicion</td>" in report["text"]["div"]
    DiagnosticReport.model_validate(report)
