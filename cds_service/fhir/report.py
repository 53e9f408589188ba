"""Build the FHIR R4 DiagnosticReport (preliminary) for one analysed study, with fhir.resources R4B.

Shape (http://hl7.org/fhir/R4/diagnosticreport.html): ``status`` preliminary, ``category`` RAD,
``code`` LOINC XR Pelvis and Hip, ``result`` → one Observation per hip (fracture suspected or not,
probability, Garden stage with probabilities, undisplaced/displaced), ``conclusion`` and
``conclusionCode`` (SNOMED CT) when a fracture is suspected, ``media`` → a Media resource coded as a
visual explanation (DICOM DCM 130401) holding the heat-map overlay, ``presentedForm`` → the same PNG,
``meta.tag`` AIAST (AI asserted) everywhere. The Observations, the Media and the AI Device are
``contained`` so the suggestion's single ``create`` action is directly POSTable. R4's
DiagnosticReport.performer does not admit a Device, so the Observations name it in ``device``
and the Media in ``device``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from cds_service import __version__
from cds_service.fhir import codes
from cds_service.fhir.validate import check_bindings
from cds_service.findings import GARDEN_STAGES, HipFinding, StudyFindings


@dataclass(frozen=True)
class ReportContext:
    """Who and what the report is about (references as the EHR gave them)."""

    patient_id: str
    imaging_study_id: str | None = None
    order_reference: str | None = None  # e.g. "ServiceRequest/abc"
    encounter_id: str | None = None
    effective: str | None = None  # ImagingStudy.started


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _side_text(hip: HipFinding) -> str:
    return {"R": "Right hip", "L": "Left hip"}.get(hip.laterality or "", "Hip (side unknown)")


def _percent(probability: float) -> dict:
    """A UCUM percentage Quantity."""
    return {"value": round(100 * probability, 1), "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}


def _observation(index: int, hip: HipFinding, findings: StudyFindings, context: ReportContext) -> dict:
    components = [
        {"code": {"coding": [codes.FRACTURE_PROBABILITY]}, "valueQuantity": _percent(hip.fracture_probability)}
    ]
    if hip.fractured:
        components.append(
            {
                "code": {"coding": [codes.GARDEN_STAGE]},
                "valueCodeableConcept": {
                    "coding": [codes.garden_coding(hip.garden_stage)],
                    "text": "Garden "
                    + ", ".join(f"{s} {_pct(p)}" for s, p in zip(GARDEN_STAGES, hip.garden_probabilities, strict=True)),
                },
            }
        )
        components.append(
            {"code": {"coding": [codes.DISPLACED_PROBABILITY]}, "valueQuantity": _percent(hip.displaced_probability)}
        )
    observation = {
        "resourceType": "Observation",
        "id": f"hip{index}",
        "meta": {"tag": [codes.AI_ASSERTED]},
        "status": "preliminary",
        "category": [{"coding": [codes.IMAGING]}],
        "code": {"coding": [codes.FRACTURE_FINDING]},
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "bodySite": {"coding": [codes.HIP_JOINT], "text": _side_text(hip)},
        "valueCodeableConcept": {"coding": [codes.FRACTURE_PRESENT if hip.fractured else codes.FRACTURE_ABSENT]},
        "device": {"reference": "#ai-device"},
        "component": components,
    }
    if context.effective:
        observation["effectiveDateTime"] = context.effective
    return observation


def _device(findings: StudyFindings) -> dict:
    models = (findings.fracture_model, findings.garden_model)
    return {
        "resourceType": "Device",
        "id": "ai-device",
        "deviceName": [{"name": "hipcad hip-fracture CDS service", "type": "manufacturer-name"}]
        + [{"name": model.label, "type": "model-name"} for model in models],
        "version": [{"value": __version__}] + [{"value": f"{m.label} ({m.training_data})"} for m in models],
        "note": [{"text": findings.disclaimer}] if findings.disclaimer else None,
    }


def conclusion_text(findings: StudyFindings) -> str:
    """One paragraph for ``DiagnosticReport.conclusion``."""
    parts = []
    for hip in findings.hips:
        if hip.fractured:
            parts.append(
                f"{_side_text(hip)}: fracture suspected ({_pct(hip.fracture_probability)}); if femoral neck, "
                f"Garden {hip.garden_stage} ({'displaced' if hip.displaced else 'undisplaced'}, "
                f"P(III–IV) {_pct(hip.displaced_probability)})."
            )
        else:
            parts.append(f"{_side_text(hip)}: no fracture suspected ({_pct(hip.fracture_probability)}).")
    prefix = "AI-generated preliminary assessment, to be confirmed by a radiologist. "
    if findings.disclaimer:
        prefix += findings.disclaimer + " "
    return prefix + " ".join(parts)


def _media(png_b64: str, context: ReportContext, issued: str, size: tuple[int, int] | None) -> dict:
    media = {
        "resourceType": "Media",
        "id": "heatmap",
        "meta": {"tag": [codes.AI_ASSERTED]},
        "status": "completed",
        "type": {"coding": [codes.IMAGE]},
        "modality": {"coding": [codes.VISUAL_EXPLANATION]},
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "issued": issued,
        "device": {"reference": "#ai-device"},
        "content": {"contentType": "image/png", "data": png_b64, "title": "AI heat map over the radiograph"},
    }
    if size:
        media["width"], media["height"] = size
    return media


def _conclusion_codes(findings: StudyFindings) -> list[dict]:
    fractured = findings.fractured_hips
    if not fractured:
        return []
    coding = [codes.HIP_FRACTURE]
    return [{"coding": coding, "text": "Suspected hip fracture (AI, preliminary)"}]


def build_diagnostic_report(
    findings: StudyFindings,
    context: ReportContext,
    overlay_png: bytes,
    issued: datetime | None = None,
    overlay_size: tuple[int, int] | None = None,
) -> DiagnosticReport:
    """The preliminary DiagnosticReport with contained Observations, Media and Device, and the heat-map PNG.

    Raises:
        InvalidResourceError: a coded value we emit breaks a FHIR binding (a bug, never the input's fault).
    """
    issued_at = (issued or datetime.now(UTC)).isoformat(timespec="seconds")
    observations = [_observation(i, hip, findings, context) for i, hip in enumerate(findings.hips)]
    png_b64 = base64.b64encode(overlay_png).decode("ascii")
    unilateral = len(findings.hips) == 1
    report: dict = {
        "resourceType": "DiagnosticReport",
        "meta": {"tag": [codes.AI_ASSERTED]},
        "contained": [_device(findings), *observations, _media(png_b64, context, issued_at, overlay_size)],
        "status": "preliminary",
        "category": [{"coding": [codes.RADIOLOGY]}],
        "code": {
            "coding": [codes.REPORT_CODE_UNILATERAL if unilateral else codes.REPORT_CODE_BILATERAL],
            "text": "AI hip fracture assessment",
        },
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "issued": issued_at,
        "result": [{"reference": f"#{obs['id']}", "display": obs["bodySite"]["text"]} for obs in observations],
        "media": [
            {"comment": "Heat map: where the model looked (class activation map)", "link": {"reference": "#heatmap"}}
        ],
        "conclusion": conclusion_text(findings),
        "presentedForm": [
            {
                "contentType": "image/png",
                "data": png_b64,
                "title": "Heat map (class activation map) over the radiograph",
            }
        ],
    }
    if conclusion_codes := _conclusion_codes(findings):
        report["conclusionCode"] = conclusion_codes
    if context.effective:
        report["effectiveDateTime"] = context.effective
    if context.order_reference:
        report["basedOn"] = [{"reference": context.order_reference}]
    if context.imaging_study_id:
        report["imagingStudy"] = [{"reference": f"ImagingStudy/{context.imaging_study_id}"}]
    if context.encounter_id:
        report["encounter"] = {"reference": f"Encounter/{context.encounter_id}"}
    report["contained"][0] = {k: v for k, v in report["contained"][0].items() if v is not None}
    check_bindings(report)
    return DiagnosticReport.model_validate(report)
