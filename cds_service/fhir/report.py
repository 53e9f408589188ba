"""Build the FHIR R4 DiagnosticReport (preliminary) for one analysed study, with fhir.resources R4B.

Shape (http://hl7.org/fhir/R4/diagnosticreport.html): ``status`` preliminary, ``category`` RAD,
``code`` LOINC XR Pelvis and Hip, ``result`` → one Observation per hip (fracture suspected or not,
probability, Garden stage with probabilities, undisplaced/displaced), ``conclusion`` and
``conclusionCode`` (SNOMED CT) when a fracture is suspected, ``media`` → a Media resource coded as a
visual explanation (DICOM DCM 130401) holding the heat-map overlay, ``meta.tag`` AIAST (AI asserted)
everywhere. The Observations, the Media and the AI Device are ``contained`` so the suggestion's
single ``create`` action is directly POSTable. R4's DiagnosticReport.performer does not admit a
Device, so the Observations name it in ``device`` and the Media in ``device``.

When the result objects were also stored in the study's PACS (``HIPCAD_STORE_RESULTS``), the
report links them the R4 way for DICOM objects: ``imagingStudy`` also references a contained
ImagingStudy of the result series (the TID 1500 SR and the heat-map Secondary Capture: Series and
SOP Instance UIDs, SOP Classes, modalities) whose ``endpoint`` is a contained Endpoint of
connection type ``dicom-wado-rs`` with the DICOMweb base as ``address``, so each object's WADO-RS
URL is ``{address}/studies/{study}/series/{series}/instances/{instance}`` (R4 ImagingStudy and
Endpoint; DICOM PS3.18 10.4.1). Neither ``media`` (R4 Media: photo, video or audio; the SR is
none) nor ``presentedForm`` (a rendering for people, PDF recommended) fits a DICOM SR; and a
local-folder store (``file:``) is not linked, as no EHR can reach it.

The heat map is carried ONCE, chart-sized (≤ 1024 px, ≤ 150 kB JPEG, see
:func:`cds_service.explain.heatmap.chart_image`), in the contained Media, referenced from
``DiagnosticReport.media.link``: R4 defines ``media`` as "key images associated with this report",
which is what the heat map is. ``presentedForm`` is deliberately absent: R4 defines it as "rich text
representation of the entire result as issued by the diagnostic service" (several formats allowed,
all semantically equivalent), and one image of where the model looked is not the entire report;
repeating the image there only doubled the card (≈ 1.1 MB). The full-resolution view stays behind
the card's viewer link.
"""

from __future__ import annotations

import base64
import copy
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from PIL import UnidentifiedImageError

from cds_service import __version__
from cds_service.dicom.stow import StoredInstance, stored_instance
from cds_service.explain.heatmap import ChartImage, chart_image
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


#: FHIR dateTime (http://hl7.org/fhir/R4/datatypes.html#dateTime): a time needs a time zone.
_FHIR_DATETIME = re.compile(
    r"-?[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)
_DATE = re.compile(r"([0-9]{4})-?(0[1-9]|1[0-2])-?(0[1-9]|[12][0-9]|3[01])")


def fhir_date_time(value: str | None) -> str | None:
    """``value`` as a valid FHIR dateTime, or None.

    ImagingStudy.started often comes from DICOM StudyDate/StudyTime, which carry no time zone, and
    a FHIR dateTime with a time SHALL have one. Guessing a zone (UTC) could shift the time by hours,
    so a time without a zone is dropped to date precision ("2026-11-23T09:15:00" → "2026-11-23"),
    as is a DICOM date ("20261123"); a value that is no date at all is left out.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if _FHIR_DATETIME.fullmatch(value):
        return value
    if match := _DATE.match(value):
        return "-".join(match.groups())
    return None


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
    if effective := fhir_date_time(context.effective):
        observation["effectiveDateTime"] = effective
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


def _media(
    image_b64: str, content_type: str, context: ReportContext, issued: str, size: tuple[int, int] | None
) -> dict:
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
        "content": {
            "contentType": content_type,
            "data": image_b64,
            "title": "AI heat map over the radiograph (chart copy; full resolution in the viewer)",
        },
    }
    if size:
        media["width"], media["height"] = size
    return media


#: What each kind of result object is, for ImagingStudy.series.description and .instance.title.
_RESULT_TITLES = {
    "sr": "AI hip fracture result: DICOM structured report (TID 1500, unverified)",
    "sc": "AI heat map over the radiograph (DICOM Secondary Capture)",
}


def _pacs_results(stored_in_pacs: Sequence[str], context: ReportContext) -> list[dict]:
    """The contained Endpoint and ImagingStudy of the result objects stored in the PACS, or [].

    One analysis stores into one study at one base; URLs that are not this service's result
    objects, or not under an http(s) base, are left out.
    """
    found = [item for url in stored_in_pacs if (item := stored_instance(url)) is not None]
    found = [item for item in found if item.base_url.startswith(("https://", "http://"))]
    if not found:
        return []
    first = found[0]
    objects = [o for o in found if (o.base_url, o.study_instance_uid) == (first.base_url, first.study_instance_uid)]
    endpoint = {
        "resourceType": "Endpoint",
        "id": "pacs",
        "status": "active",
        "connectionType": codes.DICOM_WADO_RS,
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": first.base_url,
    }
    study = {
        "resourceType": "ImagingStudy",
        "id": "pacs-results",
        "meta": {"tag": [codes.AI_ASSERTED]},
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{first.study_instance_uid}"}],
        "status": "available",
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "endpoint": [{"reference": "#pacs"}],
        "description": "AI hip fracture results stored in the PACS beside the images",
        "numberOfSeries": len({o.series_instance_uid for o in objects}),
        "numberOfInstances": len(objects),
        "series": [_series(o) for o in objects],
    }
    return [endpoint, study]


def _series(stored: StoredInstance) -> dict:
    return {
        "uid": stored.series_instance_uid,
        "modality": {"system": codes.DCM, "code": stored.modality},
        "description": _RESULT_TITLES[stored.kind],
        "numberOfInstances": 1,
        "instance": [
            {
                "uid": stored.sop_instance_uid,
                "sopClass": {"system": codes.URI, "code": f"urn:oid:{stored.sop_class_uid}"},
                "number": 1,
                "title": _RESULT_TITLES[stored.kind],
            }
        ],
    }


def _conclusion_codes(findings: StudyFindings) -> list[dict]:
    fractured = findings.fractured_hips
    if not fractured:
        return []
    coding = [codes.HIP_FRACTURE]
    return [{"coding": coding, "text": "Suspected hip fracture (AI, preliminary)"}]


#: Reports that passed validation, by everything that shapes them except the issue time (see
#: :func:`diagnostic_report_json`). Bounded; shared by the event loop and worker threads, hence the lock.
VALIDATED_REPORTS = 64
_validated: OrderedDict[tuple, dict] = OrderedDict()
_validated_lock = threading.Lock()


def diagnostic_report_json(
    findings: StudyFindings,
    context: ReportContext,
    overlay_png: bytes,
    issued: datetime | None = None,
    overlay_size: tuple[int, int] | None = None,
    stored_in_pacs: Sequence[str] = (),
) -> dict:
    """The preliminary DiagnosticReport with contained Observations, Media and Device, and the heat map,
    as FHIR JSON (what a card carries), validated by ``fhir.resources``.

    ``overlay_png`` is the rendered overlay (PNG or JPEG, any size): a chart copy of it is embedded
    once, in the contained Media, whose width and height are those of the chart copy.
    ``overlay_size`` is only used for bytes PIL cannot decode, which are embedded as given.
    ``stored_in_pacs``: the WADO-RS URLs of the result objects stored in the PACS
    (:attr:`cds_service.domain.Analysis.stored_in_pacs`), linked through a contained ImagingStudy.

    Validation (bindings, then the ``fhir.resources`` model) runs once per distinct report: a report
    already validated for the same findings, context (patient, study, order, encounter), image and
    PACS links is copied with only its issue time (``issued`` of the report and of the Media, the
    service's own clock) renewed. That is every repeated hook for one order (order-select fires on
    each edit of the draft), where validation was the larger part of the answer's work. Each call
    returns a document of its own (the codes above are shared constants; the caller may change it).

    Raises:
        InvalidResourceError: a coded value we emit breaks a FHIR binding (a bug, never the input's fault).
    """
    issued_at = (issued or datetime.now(UTC)).isoformat(timespec="seconds")
    key = (repr(findings), context, overlay_png, overlay_size, tuple(stored_in_pacs))
    with _validated_lock:
        report = _validated.get(key)
        if report is not None:
            _validated.move_to_end(key)
    if report is None:
        report = _validated_report(findings, context, overlay_png, issued_at, overlay_size, stored_in_pacs)
        with _validated_lock:
            _validated[key] = report
            while len(_validated) > VALIDATED_REPORTS:
                _validated.popitem(last=False)
    report = copy.deepcopy(report)
    report["issued"] = issued_at
    for resource in report["contained"]:
        if resource["resourceType"] == "Media":
            resource["issued"] = issued_at
    return report


def _validated_report(
    findings: StudyFindings,
    context: ReportContext,
    overlay_png: bytes,
    issued_at: str,
    overlay_size: tuple[int, int] | None,
    stored_in_pacs: Sequence[str],
) -> dict:
    """Build the report and validate it (bindings, then ``fhir.resources``); the caller copies it."""
    observations = [_observation(i, hip, findings, context) for i, hip in enumerate(findings.hips)]
    try:
        chart = chart_image(overlay_png)
    except (UnidentifiedImageError, OSError):  # not decodable (tests' stand-in bytes): embedded as given
        chart = ChartImage(overlay_png, "image/png", overlay_size)
    image_b64 = base64.b64encode(chart.data).decode("ascii")
    unilateral = len(findings.hips) == 1
    report: dict = {
        "resourceType": "DiagnosticReport",
        "meta": {"tag": [codes.AI_ASSERTED]},
        "contained": [
            _device(findings),
            *observations,
            _media(image_b64, chart.content_type, context, issued_at, chart.size),
        ],
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
    }
    if conclusion_codes := _conclusion_codes(findings):
        report["conclusionCode"] = conclusion_codes
    if effective := fhir_date_time(context.effective):
        report["effectiveDateTime"] = effective
    if context.order_reference:
        report["basedOn"] = [{"reference": context.order_reference}]
    studies = [{"reference": f"ImagingStudy/{context.imaging_study_id}"}] if context.imaging_study_id else []
    if pacs := _pacs_results(stored_in_pacs, context):
        report["contained"] += pacs
        studies.append({"reference": "#pacs-results", "display": "AI results in the PACS (SR, heat map)"})
    if studies:
        report["imagingStudy"] = studies
    if context.encounter_id:
        report["encounter"] = {"reference": f"Encounter/{context.encounter_id}"}
    report["contained"][0] = {k: v for k, v in report["contained"][0].items() if v is not None}
    check_bindings(report)
    DiagnosticReport.model_validate(report)
    return report
