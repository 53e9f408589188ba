import base64
import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from PIL import Image

from cds_service.explain.heatmap import png_bytes
from cds_service.fhir.report import ReportContext, build_diagnostic_report, fhir_date_time
from cds_service.fhir.validate import problems
from tests.findings_factory import findings

PNG = png_bytes(np.full((30, 40, 3), 90, np.uint8))  # small: embedded as it is


def build(effective: str | None = "2026-11-20T10:15:00Z", overlay: bytes = PNG, **kw) -> DiagnosticReport:
    context = ReportContext("p1", "study-1", "ServiceRequest/o1", "e1", effective)
    return build_diagnostic_report(findings(**kw), context, overlay, issued=datetime(2026, 11, 22, tzinfo=UTC))


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
