import base64
from datetime import UTC, datetime

from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from cds_service.fhir.report import ReportContext, build_diagnostic_report
from tests.findings_factory import findings

PNG = b"\x89PNG\r\n\x1a\n fake"


def build(**kw) -> DiagnosticReport:
    context = ReportContext("p1", "study-1", "ServiceRequest/o1", "e1", "2026-11-20T10:15:00Z")
    return build_diagnostic_report(findings(**kw), context, PNG, issued=datetime(2026, 11, 22, tzinfo=UTC))


def test_report_round_trips_through_json_as_r4b():
    report = build()
    again = DiagnosticReport.model_validate_json(report.model_dump_json())
    assert again.status == "preliminary"
    assert again.category[0].coding[0].code == "RAD"
    assert again.basedOn[0].reference == "ServiceRequest/o1"
    assert again.imagingStudy[0].reference == "ImagingStudy/study-1"


def test_heat_map_is_attached_as_base64_png():
    form = build().presentedForm[0]
    assert form.contentType == "image/png"
    assert form.data == PNG  # fhir.resources holds base64Binary decoded
    assert build().model_dump(mode="json")["presentedForm"][0]["data"] == base64.b64encode(PNG).decode()


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
    assert report.media[0].link.reference == "#heatmap"


def test_conclusion_code_only_when_a_fracture_is_suspected():
    assert build().conclusionCode[0].coding[0].code == "359817006"
    assert build(right=0.1).conclusionCode is None


def test_report_code_is_loinc_xr_pelvis_and_hip():
    coding = build().code.coding[0]
    assert (coding.system, coding.code) == ("http://loinc.org", "30768-6")
