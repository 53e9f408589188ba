import base64
import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from PIL import Image

from cds_service.dicom.stow import instance_url, result_instance_uid, result_series_uid
from cds_service.explain.heatmap import png_bytes
from cds_service.fhir.report import ReportContext, diagnostic_report_json, fhir_date_time
from cds_service.fhir.validate import problems
from tests.findings_factory import findings

PNG = png_bytes(np.full((30, 40, 3), 90, np.uint8))  # small: embedded as it is


def report_model(*args, **kwargs) -> DiagnosticReport:
    """The report the card carries, read back as a ``fhir.resources`` model."""
    return DiagnosticReport.model_validate(diagnostic_report_json(*args, **kwargs))


def build(effective: str | None = "2026-11-20T10:15:00Z", overlay: bytes = PNG, **kw) -> DiagnosticReport:
    context = ReportContext("p1", "study-1", "ServiceRequest/o1", "e1", effective)
    return report_model(findings(**kw), context, overlay, issued=datetime(2026, 11, 22, tzinfo=UTC))


def test_report_round_trips_through_json_as_r4b():
    report = build()
    again = DiagnosticReport.model_validate_json(report.model_dump_json())
    assert again.status == "preliminary"
    assert again.category[0].coding[0].code == "RAD"
    assert again.basedOn[0].reference == "ServiceRequest/o1"
    assert again.imagingStudy[0].reference == "ImagingStudy/study-1"


def test_heat_map_is_carried_once_in_the_media_not_in_presented_form():
    report = build()
    assert report.presentedForm is None
    media = next(r for r in report.contained if r.get_resource_type() == "Media")
    assert media.content.data == PNG  # fhir.resources holds base64Binary decoded
    dumped = json.dumps(report.model_dump(mode="json"))
    assert dumped.count(base64.b64encode(PNG).decode()) == 1


def test_one_observation_per_hip_with_laterality_and_garden_for_fractures():
    report = build()
    observations = [r for r in report.contained if r.get_resource_type() == "Observation"]
    assert [o.bodySite.text for o in observations] == ["Right hip", "Left hip"]
    right, left = observations
    assert right.valueCodeableConcept.coding[0].code == "fracture-present"
    assert any(c.code.coding[0].code == "garden-stage" for c in right.component)
    assert left.valueCodeableConcept.coding[0].code == "fracture-absent"
    assert not any(c.code.coding[0].code == "garden-stage" for c in left.component)
    assert [r.reference for r in report.result] == ["#hip0", "#hip1"]


def test_conclusion_carries_the_disclaimer_and_ai_tag():
    report = build()
    assert "not for clinical use" in report.conclusion
    assert report.meta.tag[0].code == "AIAST"


def test_heat_map_media_is_coded_as_a_visual_explanation():
    report = build()
    media = next(r for r in report.contained if r.get_resource_type() == "Media")
    assert media.modality.coding[0].system == "http://dicom.nema.org/resources/ontology/DCM"
    assert media.modality.coding[0].code == "130401"
    assert media.content.contentType == "image/png" and media.content.data == PNG
    assert (media.width, media.height) == (40, 30)
    assert report.media[0].link.reference == "#heatmap"


def test_conclusion_code_only_when_a_fracture_is_suspected():
    assert build().conclusionCode[0].coding[0].code == "359817006"
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
        ("2026-11-23T09:15:00", "2026-11-23"),  # a time without a zone: date precision, no guessed zone
        ("2026-11-23T09:15:00.123", "2026-11-23"),
        ("2026-11-23", "2026-11-23"),
        ("20261123", "2026-11-23"),  # DICOM DA
        ("2026-11", "2026-11"),
        ("2026-11-23T09:15:00+01:00", "2026-11-23T09:15:00+01:00"),
        ("2026-11-23T09:15:00Z", "2026-11-23T09:15:00Z"),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_effective_without_a_time_zone_does_not_raise(started, effective):
    assert fhir_date_time(started) == effective
    report = build(effective=started)
    dumped = report.model_dump(mode="json", exclude_none=True)
    assert dumped.get("effectiveDateTime") == effective
    observation = next(r for r in dumped["contained"] if r["resourceType"] == "Observation")
    assert observation.get("effectiveDateTime") == effective


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
        [instance_url(BASE, "1.2.3", "1.2.3.7", "1.2.3.7.1")],  # not an object this service wrote
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
    assert {**again, "issued": first["issued"], "contained": None} == {**first, "contained": None}

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
