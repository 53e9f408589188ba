"""The DiagnosticReport against US Core DiagnosticReport for Report and Note (STU7) and HL7 AI
Transparency on FHIR, through the strictest validator the tests have: Medplum's ``validateResource``
(``medplum_validate.js``: R4 cardinalities, types, formats and FHIRPath invariants, dom-1..6), besides
``fhir.resources`` and our bindings check. Medplum's in-memory server (the ``fhir_server`` fixture)
does not validate what it stores; it is where the card's suggestion is applied as an EHR applies it
(the report under its own id, then the Provenance), so that its references are resolved for real.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_service.fhir.provenance import provenance_json
from cds_service.fhir.report import ReportContext, diagnostic_report_json
from tests.conftest import require
from tests.findings_factory import findings
from tests.servers.fhir import MedplumFhirServer

VALIDATOR = Path(__file__).with_name("medplum_validate.js")

ISSUED = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
CONTEXT = ReportContext(
    "pat-uscore", "study-uscore", None, "enc-uscore", "2026-11-22T07:55:00", based_on=("ServiceRequest/done-uscore",)
)
#: US Core DiagnosticReport for Report and Note, Must Support elements the service has data for
#: (``performer`` is Must Support too, but R4 admits no Device there: see cds_service.fhir.report).
MUST_SUPPORT = ("status", "category", "code", "subject", "encounter", "effectiveDateTime", "issued", "presentedForm")
#: us-core-10: effective[x] SHALL be present if the status is one of these.
US_CORE_10 = {"partial", "preliminary", "final", "amended", "corrected", "appended"}


def report() -> dict:
    return diagnostic_report_json(findings(), CONTEXT, b"png", issued=ISSUED)


def test_must_support_elements_and_us_core_10():
    resource = report()
    assert all(resource.get(element) for element in MUST_SUPPORT)
    assert resource["status"] in US_CORE_10 and "effectiveDateTime" in resource
    categories = [c["coding"][0] for c in resource["category"]]
    assert {"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"} in categories  # us-core slice
    assert resource["code"]["coding"][0]["system"] == "http://loinc.org"
    assert resource["subject"]["reference"].startswith("Patient/")
    assert resource["presentedForm"][0]["contentType"] == "text/html"
    assert b"Not for clinical use" in base64.b64decode(resource["presentedForm"][0]["data"])
    assert resource["text"]["status"] == "generated"


def test_effective_is_not_after_issued_and_read_in_the_configured_zone():
    local = ReportContext("p1", effective="2026-11-22T09:15:00", local_timezone="Europe/Zurich")
    resource = diagnostic_report_json(findings(), local, b"png", issued=ISSUED)
    assert resource["effectiveDateTime"] == "2026-11-22T09:15:00+01:00"  # 08:15 UTC, before issued at 08:30
    effective = datetime.fromisoformat(resource["effectiveDateTime"])
    assert effective <= datetime.fromisoformat(resource["issued"])


def test_ai_transparency_device_and_provenance():
    resource = report()
    device = next(r for r in resource["contained"] if r["resourceType"] == "Device")
    assert device["type"]["coding"][0]["code"] == "Artificial-Intelligence"  # AI Device: type 1..1, fixed
    assert device["manufacturer"] and device["modelNumber"] and all(v.get("type") for v in device["version"])
    provenance = provenance_json(resource)
    assert provenance["meta"]["security"][0]["code"] == "AIAST"
    assert provenance["reason"][0]["coding"][0]["code"] == "AIAST"  # AI Provenance: reason AIReason 1..1
    (agent,) = provenance["agent"]
    assert agent["type"]["coding"][0]["code"] == "author"
    assert agent["role"][0]["coding"][0]["code"] == "Artificial-Intelligence"  # AIagent slice
    assert agent["who"]["reference"] == "#ai-device"
    assert provenance["contained"] == [device]


@pytest.fixture(scope="module")
def chart(fhir_server) -> None:
    """What the EHR holds before the card: the patient, the encounter, the performed order, the study."""
    fhir_server.put({"resourceType": "Patient", "id": "pat-uscore"})
    fhir_server.put(
        {"resourceType": "Encounter", "id": "enc-uscore", "status": "in-progress", "class": {"code": "EMER"}}
    )
    fhir_server.put(
        {
            "resourceType": "ServiceRequest",
            "id": "done-uscore",
            "status": "completed",
            "intent": "order",
            "subject": {"reference": "Patient/pat-uscore"},
        }
    )
    fhir_server.put(
        {
            "resourceType": "ImagingStudy",
            "id": "study-uscore",
            "status": "available",
            "subject": {"reference": "Patient/pat-uscore"},
            "basedOn": [{"reference": "ServiceRequest/done-uscore"}],
        }
    )


def _resolve(fhir_server, reference: str) -> dict:
    return fhir_server.get(reference)


def test_the_suggestion_is_stored_by_the_validating_server_and_its_references_resolve(fhir_server, chart):
    resource = report()
    provenance = provenance_json(resource)
    stored = fhir_server.put(resource)  # create under the report's own id, as the Provenance targets it
    assert stored["id"] == resource["id"]
    created = fhir_server.post(provenance)
    assert created.status_code == 201, created.text
    provenance = fhir_server.get(f"Provenance/{created.json()['id']}")
    (target,) = provenance["target"]
    assert _resolve(fhir_server, target["reference"])["id"] == resource["id"]
    (entity,) = provenance["entity"]
    assert _resolve(fhir_server, entity["what"]["reference"])["resourceType"] == "ImagingStudy"
    assert _resolve(fhir_server, stored["basedOn"][0]["reference"])["status"] == "completed"
    found = fhir_server.get("DiagnosticReport", _security="AIAST")
    assert resource["id"] in [entry["resource"]["id"] for entry in found.get("entry", [])]


def medplum_errors(*resources: dict) -> list[list[str]]:
    """Medplum's validator's errors for each resource (warnings left out)."""
    require(
        MedplumFhirServer.installed(), "the FHIR test server (Medplum) is not installed (run .ci/install-servers.sh)"
    )
    node = shutil.which("node") or "node"
    done = subprocess.run(
        [node, str(VALIDATOR)], input=json.dumps(resources), capture_output=True, text=True, timeout=60, check=True
    )
    return [[i["text"] for i in issues if i["severity"] in ("error", "fatal")] for issues in json.loads(done.stdout)]


def test_medplums_validator_finds_no_error_in_the_report_and_its_provenance():
    resource = report()
    assert medplum_errors(resource, provenance_json(resource)) == [[], []]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda r: r.pop("code"), "Missing required property"),
        (lambda r: r["contained"][1].update(meta={"security": r["meta"]["security"]}), "dom-5"),
        (lambda r: r.update(effectiveDateTime="2026-11-22T09:15"), "Invalid dateTime format"),
    ],
)
def test_medplums_validator_is_strict_enough_to_fail(change, error):
    """The check above can fail: the same validator finds a broken report's error."""
    resource = report()
    change(resource)
    (errors,) = medplum_errors(resource)
    assert any(error in text for text in errors), errors
