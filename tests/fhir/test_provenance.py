"""The Provenance is created in the same card suggestion as the report, and its references resolve:
the target to the report of that suggestion, the agent to its contained AI Device, the entity to the
analysed ImagingStudy."""

from datetime import UTC, datetime

import numpy as np
import pytest

from cds_service.domain import Analysis
from cds_service.explain.heatmap import ChartImage, png_bytes
from cds_service.fhir.provenance import provenance_json
from cds_service.fhir.report import ReportContext, diagnostic_report_json
from cds_service.fhir.validate import InvalidResourceError, problems
from cds_service.pipeline import AnalysisPipeline
from cds_service.settings import Settings
from tests.findings_factory import findings

CONTEXT = ReportContext("p1", "study-1", "ServiceRequest/draft", effective="2026-11-22T07:00:00Z")


def report() -> dict:
    return diagnostic_report_json(findings(), CONTEXT, b"png", issued=datetime(2026, 11, 22, 8, tzinfo=UTC))


def test_the_provenance_targets_the_report_names_the_ai_and_the_study():
    resource = report()
    provenance = provenance_json(resource)
    assert provenance["target"][0]["reference"] == f"DiagnosticReport/{resource['id']}"
    assert [e["what"]["reference"] for e in provenance["entity"]] == ["ImagingStudy/study-1"]
    assert provenance["entity"][0]["role"] == "source"
    assert provenance["recorded"] == provenance["occurredDateTime"] == resource["issued"]
    assert problems(provenance) == []  # the agent's #ai-device resolves to the contained Device


def test_without_an_imaging_study_there_is_no_entity():
    resource = diagnostic_report_json(findings(), ReportContext("p1"), b"png")
    assert "entity" not in provenance_json(resource)


def test_a_provenance_breaking_a_binding_is_refused():
    resource = report()
    resource["contained"][0]["deviceName"][0]["type"] = "nickname"
    with pytest.raises(InvalidResourceError, match="DeviceNameType"):
        provenance_json(resource)


def test_the_card_suggestion_creates_the_report_then_its_provenance(tmp_path):
    pipeline = AnalysisPipeline.from_settings(Settings(feedback_db=tmp_path / "store.sqlite3", dicom_folder=tmp_path))
    grey = np.full((64, 64), 128, np.uint8)
    analysis = Analysis(findings(), ChartImage(png_bytes(grey), "image/png", (64, 64)), grey.shape, [], grey, grey, ())
    resource = pipeline.report(analysis, CONTEXT)
    card = pipeline.card(analysis, resource, None, provenance_json(resource))
    (suggestion,) = card.suggestions
    created = [(a.type, a.resource["resourceType"]) for a in suggestion.actions]
    assert created == [("create", "DiagnosticReport"), ("create", "Provenance")]
    in_suggestion = {f"{a.resource['resourceType']}/{a.resource.get('id')}" for a in suggestion.actions}
    provenance = suggestion.actions[1].resource
    assert provenance["target"][0]["reference"] in in_suggestion  # resolves within the suggestion
    assert provenance["entity"][0]["what"]["reference"] == f"ImagingStudy/{CONTEXT.imaging_study_id}"
