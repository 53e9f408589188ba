import pytest

from cds_service.fhir.report import ReportContext, diagnostic_report_json
from cds_service.fhir.validate import InvalidResourceError, check_bindings, problems
from tests.findings_factory import findings


def report_json() -> dict:
    return diagnostic_report_json(findings(), ReportContext("p1"), b"png")


def test_what_we_emit_has_no_binding_problems():
    assert problems(report_json()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(status="bogus"), "DiagnosticReport.status"),
        (lambda r: r["contained"][1].update(status="done"), "Observation.status"),
        (lambda r: r["contained"][0]["deviceName"][0].update(type="nickname"), "DeviceNameType"),
        (lambda r: r["category"][0]["coding"][0].update(system="http://example.org/made-up"), "unknown code system"),
        (lambda r: r["result"][0].update(reference="#nowhere"), "does not resolve"),
        (
            lambda r: next(c for c in r["contained"] if c["resourceType"] == "Media")["content"].update(
                contentType="text/plain"
            ),
            "not an image type",
        ),
        (lambda r: r["presentedForm"][0].update(contentType="image/png"), "presentedForm contentType"),
        (lambda r: r["text"].update(status="done"), "NarrativeStatus"),
        (lambda r: r["contained"][1].update(meta={"security": r["meta"]["security"]}), "dom-5"),
    ],
)
def test_binding_violations_are_caught(change, message):
    resource = report_json()
    change(resource)
    with pytest.raises(InvalidResourceError, match=message):
        check_bindings(resource)


def test_a_provenance_entity_role_is_checked():
    provenance = {"resourceType": "Provenance", "entity": [{"role": "input", "what": {"reference": "ImagingStudy/1"}}]}
    assert problems(provenance) == ["Provenance.entity.role 'input' is not a ProvenanceEntityRole"]
