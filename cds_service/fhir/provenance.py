"""The Provenance of an AI DiagnosticReport (HL7 AI Transparency on FHIR, AI Provenance profile).

Created in the same card suggestion as the report (CDS Hooks 2.0 § Action: the actions of a
suggestion are applied together), it records who made the report and from what:

* ``target`` the report (``DiagnosticReport/{id}``, the id the report carries);
* ``agent`` the AI Device, type ``author`` and role Artificial-Intelligence (AI Provenance slice
  ``AIagent``), contained here as a copy of the report's own contained Device (a contained resource
  can only be referenced from inside its container);
* ``entity`` the analysed ImagingStudy, role ``source``;
* ``reason`` AIAST and ``meta.security`` AIAST; ``recorded`` and ``occurredDateTime`` the report's
  ``issued``, when the AI produced it; ``activity`` CREATE (http://hl7.org/fhir/R4/provenance.html).
"""

from __future__ import annotations

import copy
import html
from typing import Any

from fhir.resources.R4B.provenance import Provenance

from cds_service.fhir import codes
from cds_service.fhir.validate import check_bindings


def provenance_json(report: dict[str, Any]) -> dict[str, Any]:
    """The Provenance of ``report`` (FHIR JSON from :func:`diagnostic_report_json`), validated
    (bindings, then ``fhir.resources``).

    Raises:
        InvalidResourceError: a coded value breaks a FHIR binding (a bug, never the input's fault).
        KeyError: ``report`` has no ``id`` or no contained Device (not one of ours).
    """
    device = copy.deepcopy(next(r for r in report["contained"] if r["resourceType"] == "Device"))
    studies = [
        ref["reference"]
        for ref in report.get("imagingStudy", [])
        if ref["reference"].startswith("ImagingStudy/")  # contained result series are part of the report
    ]
    target = f"DiagnosticReport/{report['id']}"
    summary = html.escape(f"{target}: created by the AI device {device['deviceName'][0]['name']}")
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "meta": {"security": [codes.AI_ASSERTED]},
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{summary}</p></div>'},
        "contained": [device],
        "target": [{"reference": target, "display": "AI hip fracture assessment (preliminary)"}],
        "occurredDateTime": report["issued"],
        "recorded": report["issued"],
        "reason": [{"coding": [codes.AI_ASSERTED]}],
        "activity": {"coding": [codes.CREATE]},
        "agent": [
            {
                "type": {"coding": [codes.AUTHOR]},
                "role": [{"coding": [codes.ARTIFICIAL_INTELLIGENCE]}],
                "who": {"reference": f"#{device['id']}", "display": device["deviceName"][0]["name"]},
            }
        ],
    }
    if studies:
        provenance["entity"] = [{"role": "source", "what": {"reference": study}} for study in studies]
    check_bindings(provenance)
    Provenance.model_validate(provenance)
    return provenance
