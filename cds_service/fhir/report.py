"""Build the FHIR R4 DiagnosticReport (preliminary) for one analysed study, with fhir.resources R4B.

Profiles followed: US Core DiagnosticReport Profile for Report and Note Exchange (STU7) and HL7 AI
Transparency on FHIR (STU1). Shape (http://hl7.org/fhir/R4/diagnosticreport.html):

* ``meta.security`` AIAST (AI asserted; a ``_security=AIAST`` search finds the report); contained
  resources carry no security label of their own (R4 dom-5) and inherit the report's.
* ``status`` preliminary; ``category`` v2-0074 RAD and LOINC LP29684-5 (the US Core radiology
  category); ``code`` the LOINC playbook procedure (:data:`codes.REPORT_CODE_BILATERAL`).
* ``effectiveDateTime`` always (us-core-10), never after ``issued`` (:mod:`cds_service.fhir.effective`).
* ``basedOn``: the analysed ImagingStudy's own ``basedOn`` (the order that produced the image),
  omitted when it has none; never the draft order being placed, which is not yet performed.
* ``result`` → per hip a contained Observation: ``code`` the finding looked for (SNOMED CT closed
  fracture of hip, of the femoral neck when the model names that site), ``value`` SNOMED CT
  Suspected / Negative (the AI's call, not a diagnosis), ``bodySite`` the hip joint with its
  laterality coded, the fracture probability as a component. A Garden Observation only for a
  femoral-neck fracture (:attr:`HipFinding.garden_applies`), labelled as conditional on one. Every
  Observation is ``derivedFrom`` the ImagingStudy and the heat-map Media and names the AI Device.
* ``conclusion`` text and ``conclusionCode`` the suspicion (:func:`codes.suspected`), not a disorder.
* ``presentedForm`` a readable text/html report (findings, the AI statement, "not for clinical use")
  and the same content as the narrative (``text``, status generated).
* ``media`` → a contained Media coded as a visual explanation (DICOM DCM 130401) holding the heat
  map, carried once, chart-sized (≤ 1024 px, ≤ 150 kB JPEG, :func:`chart_image`).
* The AI Device (contained): type Artificial-Intelligence (AI Device profile), manufacturer, model
  names and one typed version per model. R4's DiagnosticReport.performer does not admit a Device, so
  ``performer`` (Must Support) is absent; the Observations and the Media name the Device in ``device``,
  and the Provenance built from this report (:mod:`cds_service.fhir.provenance`) names it as agent.

The report has a content-derived ``id`` so the Provenance created in the same card suggestion can
target it (``DiagnosticReport/{id}``); identical content gives the same id.

When the result objects were also stored in the study's PACS (``HIPCAD_STORE_RESULTS``), the
report links them the R4 way for DICOM objects: ``imagingStudy`` also references a contained
ImagingStudy of the result series (the TID 1500 SR and the heat-map Secondary Capture: Series and
SOP Instance UIDs, SOP Classes, modalities) whose ``endpoint`` is a contained Endpoint of
connection type ``dicom-wado-rs`` with the DICOMweb base as ``address``, so each object's WADO-RS
URL is ``{address}/studies/{study}/series/{series}/instances/{instance}`` (R4 ImagingStudy and
Endpoint; DICOM PS3.18 10.4.1). A local-folder store (``file:``) is not linked, as no EHR can reach it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from PIL import UnidentifiedImageError

from cds_service import __version__
from cds_service.dicom.stow import StoredInstance, stored_instance
from cds_service.domain import FEMORAL_NECK, TROCHANTERIC, ModelInfo
from cds_service.explain.heatmap import ChartImage, chart_image
from cds_service.fhir import codes
from cds_service.fhir.effective import effective_date_time
from cds_service.fhir.validate import check_bindings
from cds_service.findings import GARDEN_STAGES, HipFinding, StudyFindings


@dataclass(frozen=True)
class ReportContext:
    """Who and what the report is about (references as the EHR gave them)."""

    patient_id: str
    imaging_study_id: str | None = None
    #: The draft order being placed. Not emitted: the report is ``basedOn`` the order that produced
    #: the image (``based_on``), never one that is not yet performed.
    order_reference: str | None = None
    encounter_id: str | None = None
    effective: str | None = None  # ImagingStudy.started, as the EHR gave it
    based_on: tuple[str, ...] = ()  # the analysed ImagingStudy's own basedOn references
    acquired: datetime | None = None  # the image's acquisition instant (effective.dicom_instant)
    local_timezone: str = "UTC"  # HIPCAD_LOCAL_TIMEZONE: the zone of DICOM times without an offset


#: Namespace of the report ids (UUID v5 of the report's content digest).
_REPORT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://hipcad.example.org/fhir/DiagnosticReport")
#: Said in the narrative, the presentedForm and the conclusion, whatever the models' disclaimers.
AI_STATEMENT = "AI-generated preliminary assessment, to be confirmed by a radiologist. Not for clinical use."
_SITE_TEXT = {FEMORAL_NECK: "femoral neck", TROCHANTERIC: "trochanteric"}
GARDEN_CONDITION = "conditional on a femoral-neck fracture"


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _side_text(hip: HipFinding) -> str:
    return {"R": "Right hip", "L": "Left hip"}.get(hip.laterality or "", "Hip (side unknown)")


def _site_text(hip: HipFinding) -> str:
    return _SITE_TEXT.get(hip.site, "site uncertain")


def _percent(probability: float) -> dict:
    """A UCUM percentage Quantity."""
    return {"value": round(100 * probability, 1), "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}


def _finding(hip: HipFinding) -> dict[str, str]:
    """The SNOMED CT finding an Observation looks for: the femoral-neck fracture when that is the site."""
    return codes.NECK_OF_FEMUR_FRACTURE if hip.site == FEMORAL_NECK else codes.HIP_FRACTURE


def _derived_from(context: ReportContext) -> list[dict]:
    study = [{"reference": f"ImagingStudy/{context.imaging_study_id}"}] if context.imaging_study_id else []
    return [*study, {"reference": "#heatmap", "display": "Heat map (visual explanation)"}]


def _body_site(hip: HipFinding) -> dict:
    return {"coding": [codes.lateral_hip_joint(hip.laterality)], "text": _side_text(hip)}


def _observations(index: int, hip: HipFinding, context: ReportContext) -> list[dict]:
    """The hip's Observation and, for a femoral-neck fracture only, its Garden Observation."""
    common = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [codes.IMAGING]}],
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "bodySite": _body_site(hip),
        "device": {"reference": "#ai-device"},
        "derivedFrom": _derived_from(context),
    }
    hip_observation = {
        **common,
        "id": f"hip{index}",
        "code": {"coding": [_finding(hip)], "text": "Hip fracture (AI suspicion)"},
        "valueCodeableConcept": {
            "coding": [codes.SUSPECTED if hip.fractured else codes.NEGATIVE],
            "text": _call_text(hip),
        },
        "component": [
            {"code": {"coding": [codes.FRACTURE_PROBABILITY]}, "valueQuantity": _percent(hip.fracture_probability)}
        ],
    }
    if not hip.garden_applies:
        return [hip_observation]
    components = [
        {"code": {"coding": [codes.garden_probability(stage)]}, "valueQuantity": _percent(probability)}
        for stage, probability in zip(GARDEN_STAGES, hip.garden_probabilities, strict=True)
    ]
    components.append(
        {"code": {"coding": [codes.DISPLACED_PROBABILITY]}, "valueQuantity": _percent(hip.displaced_probability)}
    )
    garden = {
        **common,
        "id": f"garden{index}",
        "code": {"coding": [codes.GARDEN_STAGE], "text": f"Garden stage (AI), {GARDEN_CONDITION}"},
        "valueCodeableConcept": {
            "coding": [codes.garden_coding(hip.garden_stage)],
            "text": f"Garden {hip.garden_stage} ({'displaced' if hip.displaced else 'undisplaced'}), "
            f"{GARDEN_CONDITION}",
        },
        "derivedFrom": [*common["derivedFrom"], {"reference": f"#hip{index}"}],
        "component": components,
    }
    return [hip_observation, garden]


def _model_version(role: str, model: ModelInfo) -> dict:
    return {
        "type": {
            "coding": [codes.ALGORITHM_VERSION],
            "text": f"{role} model {model.name} ({model.architecture}; training data: {model.training_data})",
        },
        "value": model.version,
    }


def ai_device(findings: StudyFindings) -> dict:
    """The AI Device (HL7 AI Transparency AI Device profile: type Artificial-Intelligence): manufacturer,
    names, and typed versions: the service software and one per model."""
    device = {
        "resourceType": "Device",
        "id": "ai-device",
        "extension": [{"url": codes.AI_KIND_EXTENSION, "valueCodeableConcept": {"coding": [codes.DEEP_LEARNING]}}],
        "type": {"coding": [codes.ARTIFICIAL_INTELLIGENCE], "text": "AI hip fracture detection"},
        "manufacturer": "hipcad project",
        "deviceName": [
            {"name": "hipcad hip-fracture CDS service", "type": "manufacturer-name"},
            {"name": "hipcad hip-fracture AI", "type": "model-name"},
        ],
        "modelNumber": f"{findings.fracture_model.label}+{findings.garden_model.label}",
        "version": [
            {"type": {"coding": [codes.SOFTWARE_VERSION], "text": "hipcad service"}, "value": __version__},
            _model_version("Fracture", findings.fracture_model),
            _model_version("Garden", findings.garden_model),
        ],
    }
    if findings.disclaimer:
        device["note"] = [{"text": findings.disclaimer}]
    return device


def _call_text(hip: HipFinding) -> str:
    """The hip's call in words, as the card's tiers put it."""
    if not hip.fractured:
        return "No fracture suspected"
    if hip.low_suspicion:
        return "Low suspicion of fracture (below the high-specificity operating point; review the image)"
    return f"Fracture suspected ({_site_text(hip)})"


def _hip_sentence(hip: HipFinding) -> str:
    if not hip.fractured:
        return f"{_side_text(hip)}: no fracture suspected (fracture probability {_pct(hip.fracture_probability)})."
    if hip.low_suspicion:
        return (
            f"{_side_text(hip)}: low suspicion of fracture ({_pct(hip.fracture_probability)}, below the "
            "high-specificity operating point); review the image. No site or Garden stage given."
        )
    sentence = f"{_side_text(hip)}: fracture suspected ({_pct(hip.fracture_probability)}; {_site_text(hip)})"
    if hip.garden_applies:
        return (
            f"{sentence}; Garden {hip.garden_stage}, {GARDEN_CONDITION} "
            f"({'displaced' if hip.displaced else 'undisplaced'}, P(III–IV) {_pct(hip.displaced_probability)})."
        )
    return f"{sentence}; no Garden stage (applies to femoral-neck fractures only)."


def conclusion_text(findings: StudyFindings) -> str:
    """One paragraph for ``DiagnosticReport.conclusion``."""
    prefix = AI_STATEMENT + " "
    if findings.disclaimer:
        prefix += findings.disclaimer + " "
    return prefix + " ".join(_hip_sentence(hip) for hip in findings.hips)


def _report_xhtml(findings: StudyFindings) -> str:
    """The report for people, as an XHTML fragment (FHIR Narrative rules: no scripts, no styles)."""
    e = html.escape
    rows = "".join(
        "<tr>"
        f"<td>{e(_side_text(hip))}</td>"
        f"<td>{'not suspected' if not hip.fractured else 'low suspicion' if hip.low_suspicion else 'suspected'}</td>"
        f"<td>{e(_pct(hip.fracture_probability))}</td>"
        f"<td>{e(_site_text(hip)) if hip.fractured and not hip.low_suspicion else '–'}</td>"
        f"<td>{e(f'Garden {hip.garden_stage}') if hip.garden_applies else '–'}</td>"
        "</tr>"
        for hip in findings.hips
    )
    models = ", ".join(m.label for m in (findings.fracture_model, findings.garden_model))
    disclaimer = f"<p>{e(findings.disclaimer)}</p>" if findings.disclaimer else ""
    return (
        "<h2>AI hip fracture assessment (preliminary)</h2>"
        f"<p><b>{e(AI_STATEMENT)}</b></p>"
        f"<p>Produced by an artificial-intelligence system (hipcad hip-fracture AI; models {e(models)}).</p>"
        "<table><tr><th>Hip</th><th>Fracture</th><th>Probability</th><th>Site</th>"
        f"<th>Garden stage ({GARDEN_CONDITION})</th></tr>{rows}</table>"
        f"<p>{e(' '.join(_hip_sentence(hip) for hip in findings.hips))}</p>"
        f"{disclaimer}"
    )


def _presented_form(body: str) -> dict:
    document = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/>'
        "<title>AI hip fracture assessment (preliminary, not for clinical use)</title></head>"
        f"<body>{body}</body></html>"
    )
    return {
        "contentType": "text/html",
        "language": "en",
        "data": base64.b64encode(document.encode("utf-8")).decode("ascii"),
        "title": "AI hip fracture assessment (preliminary, not for clinical use)",
    }


def _media(image_b64: str, content_type: str, context: ReportContext, size: tuple[int, int] | None) -> dict:
    media = {
        "resourceType": "Media",
        "id": "heatmap",
        "status": "completed",
        "type": {"coding": [codes.IMAGE]},
        "modality": {"coding": [codes.VISUAL_EXPLANATION]},
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "device": {"reference": "#ai-device"},
        "content": {
            "contentType": content_type,
            "data": image_b64,
            "title": "AI heat map over the radiograph (reduced chart copy; open the viewer link for the image)",
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
    """The suspected findings (SNOMED CT situations, :func:`codes.suspected`), one per distinct finding."""
    called = findings.fractured_hips
    suspected = [hip for hip in called if not hip.low_suspicion] or called  # low suspicions only when alone
    distinct = {finding["code"]: finding for finding in map(_finding, suspected)}
    return [
        {"coding": [codes.suspected(finding)], "text": "Suspected hip fracture (AI, preliminary)"}
        for finding in distinct.values()
    ]


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
    ``effectiveDateTime`` (report and Observations): :func:`effective_date_time` of the
    ImagingStudy's ``started``, else the acquisition time, else ``issued``; never after ``issued``.

    Validation (bindings, then the ``fhir.resources`` model) runs once per distinct report: a report
    already validated for the same findings, context, image and PACS links is copied with only its
    times (``issued`` of the report and of the Media, the service's own clock, and ``effective``
    where it falls back to it) renewed. That is every repeated hook for one order (order-select fires
    on each edit of the draft), where validation was the larger part of the answer's work. Each call
    returns a document of its own (the codes above are shared constants; the caller may change it).

    Raises:
        InvalidResourceError: a coded value we emit breaks a FHIR binding (a bug, never the input's fault).
    """
    issued_at = issued or datetime.now(UTC)
    key = (repr(findings), context, overlay_png, overlay_size, tuple(stored_in_pacs))
    with _validated_lock:
        report = _validated.get(key)
        if report is not None:
            _validated.move_to_end(key)
    if report is None:
        report = _validated_report(findings, context, overlay_png, issued_at, overlay_size, stored_in_pacs, key)
        with _validated_lock:
            _validated[key] = report
            while len(_validated) > VALIDATED_REPORTS:
                _validated.popitem(last=False)
    report = copy.deepcopy(report)
    _set_times(report, context, issued_at)
    return report


def _set_times(report: dict, context: ReportContext, issued: datetime) -> None:
    """``issued`` (report, Media) and ``effectiveDateTime`` (report, Observations) for this issue time."""
    effective = effective_date_time(context.effective, context.acquired, issued, context.local_timezone)
    report["issued"] = issued.isoformat(timespec="seconds")
    report["effectiveDateTime"] = effective
    for resource in report["contained"]:
        if resource["resourceType"] == "Media":
            resource["issued"] = report["issued"]
        elif resource["resourceType"] == "Observation":
            resource["effectiveDateTime"] = effective


def _report_id(key: tuple) -> str:
    """A UUID v5 of the report's content (findings, context, image, PACS links)."""
    digest = hashlib.sha256()
    for part in key:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
    return str(uuid.uuid5(_REPORT_NAMESPACE, digest.hexdigest()))


def _validated_report(
    findings: StudyFindings,
    context: ReportContext,
    overlay_png: bytes,
    issued: datetime,
    overlay_size: tuple[int, int] | None,
    stored_in_pacs: Sequence[str],
    key: tuple,
) -> dict:
    """Build the report and validate it (bindings, then ``fhir.resources``); the caller copies it."""
    observations = [obs for i, hip in enumerate(findings.hips) for obs in _observations(i, hip, context)]
    try:
        chart = chart_image(overlay_png)
    except (UnidentifiedImageError, OSError):  # not decodable (tests' stand-in bytes): embedded as given
        chart = ChartImage(overlay_png, "image/png", overlay_size)
    image_b64 = base64.b64encode(chart.data).decode("ascii")
    unilateral = len(findings.hips) == 1
    body = _report_xhtml(findings)
    report: dict = {
        "resourceType": "DiagnosticReport",
        "id": _report_id(key),
        "meta": {"security": [codes.AI_ASSERTED]},
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'},
        "contained": [ai_device(findings), *observations, _media(image_b64, chart.content_type, context, chart.size)],
        "status": "preliminary",
        "category": [{"coding": [codes.RADIOLOGY]}, {"coding": [codes.RADIOLOGY_LOINC]}],
        "code": {
            "coding": [codes.REPORT_CODE_UNILATERAL if unilateral else codes.REPORT_CODE_BILATERAL],
            "text": "AI hip fracture assessment",
        },
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "result": [
            {
                "reference": f"#{obs['id']}",
                "display": f"{obs['bodySite']['text']}: {obs['valueCodeableConcept']['text']}",
            }
            for obs in observations
        ],
        "media": [
            {"comment": "Heat map: where the model looked (class activation map)", "link": {"reference": "#heatmap"}}
        ],
        "conclusion": conclusion_text(findings),
        "presentedForm": [_presented_form(body)],
    }
    if conclusion_codes := _conclusion_codes(findings):
        report["conclusionCode"] = conclusion_codes
    if context.based_on:
        report["basedOn"] = [{"reference": reference} for reference in context.based_on]
    studies = [{"reference": f"ImagingStudy/{context.imaging_study_id}"}] if context.imaging_study_id else []
    if pacs := _pacs_results(stored_in_pacs, context):
        report["contained"] += pacs
        studies.append({"reference": "#pacs-results", "display": "AI results in the PACS (SR, heat map)"})
    if studies:
        report["imagingStudy"] = studies
    if context.encounter_id:
        report["encounter"] = {"reference": f"Encounter/{context.encounter_id}"}
    _set_times(report, context, issued)
    check_bindings(report)
    DiagnosticReport.model_validate(report)
    return report
