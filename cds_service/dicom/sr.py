"""The AI result as a DICOM Comprehensive 3D SR: TID 1500 Measurement Report (highdicom), PS3.16.

One SR per analysed instance, in the source study, in a series of its own:

* **Procedure Reported** per laterality: bilateral when both hips were analysed, right or left
  when one hip of known side was (:func:`cds_service.dicom.codes.procedure_reported`).
* **Image Library** (TID 1600) with the analysed image: its modality, orientation and laterality.
* Per hip one **TID 1501 measurement group**, tracked as "Right hip" / "Left hip": the Finding is a
  finding of no fracture for a hip the model does not call fractured, else the fracture at its site
  (femoral neck, trochanteric, or hip fracture when the site is uncertain); finding site hip joint
  with laterality; the fracture probability in percent; and only for a femoral-neck fracture
  (:attr:`~cds_service.domain.HipFinding.garden_applies`) the Garden stage, whether it is displaced
  and the stage probabilities, named as conditional on a femoral-neck fracture.
* Every container is ``SEPARATE`` (PS3.3 C.17.3.2.1), so a generic SR viewer (dcmtk's ``dsr2html``)
  shows each value with its name instead of running the values together.

The models are identified three times, as IHE AI Results (AIR) asks: TID 4019 Algorithm
Identification in the groups, the TID 1004 device observer (a Device Observer UID derived from the
model labels) and one Contributing Equipment item per model, with its contribution date/time and
description (the source's own items are not copied: they describe how the source was made, and the
Enhanced General Equipment of the source stays in the source). The report is UNVERIFIED,
PRELIMINARY and COMPLETE. Series and SOP Instance UIDs are derived from the content
(:func:`content_key`) and the model versions (:mod:`cds_service.dicom.uids`).

Codes come from :mod:`cds_service.dicom.codes` only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code

from cds_service.dicom import codes
from cds_service.dicom.uids import derived_uid, result_instance_uid, result_series_uid
from cds_service.domain import GARDEN_STAGES, HipFinding, ModelInfo, StudyFindings

MANUFACTURER = "hipcad"
DEVICE_NAME = "hipcad hip-fracture AI"
SR_SERIES_NUMBER = 901
#: Training data value that marks models as trained on this repository's synthetic phantoms.
SYNTHETIC = "synthetic-phantoms"
#: Contribution Description (0018,A003) of each model's Contributing Equipment item.
CONTRIBUTION = {
    "fracture": "AI detection of hip fractures on this radiograph (per-hip probability and call)",
    "garden": "AI Garden staging of femoral-neck fractures on this radiograph",
}


def model_labels(findings: StudyFindings) -> str:
    """The models behind a result as one string (``fracture@1+garden@1``): part of every derived UID."""
    return f"{findings.fracture_model.label}+{findings.garden_model.label}"


def device_uid(labels: str, root: str = "") -> str:
    """Deterministic Device (Observer) UID of a model or model set: a new version gives a new UID."""
    return derived_uid(root, "hipcad-device", labels)


def not_for_clinical_use(findings: StudyFindings) -> bool:
    models = (findings.fracture_model, findings.garden_model)
    return any(m.training_data == SYNTHETIC or m.untrained for m in models)


def series_description(findings: StudyFindings, kind: str) -> str:
    """Series Description (LO, at most 64 characters) of a result series."""
    if not_for_clinical_use(findings):
        return f"AI {kind} synthetic-trained - NOT FOR CLINICAL USE"
    return f"AI hip fracture {kind} (hipcad)"


def percent(probability: float) -> float:
    """A probability as the percentage the SR stores (two decimals)."""
    return round(100.0 * float(probability), 2)


def content_key(findings: StudyFindings) -> str:
    """What the SR says, as canonical JSON: the models and, per hip, every coded value.

    Two analyses with the same key write the same SR; anything the SR would show differently
    (a probability at its stored precision, the call, the site, the Garden values) changes the key.
    """
    hips = []
    for hip in findings.hips:
        values: list[object] = [hip.laterality, hip.fractured, hip.site, percent(hip.fracture_probability)]
        if hip.garden_applies:
            values += [percent(p) for p in hip.garden_probabilities]
        hips.append(values)
    return json.dumps([model_labels(findings), hips], separators=(",", ":"))


def algorithm_identification(model: ModelInfo, *, parameters: bool = True) -> hd.sr.AlgorithmIdentification:
    """TID 4019: name, version and (``parameters``) what decides the output, operating threshold first."""
    values = None
    if parameters:
        values = [
            f"operating_threshold={model.operating_threshold:g}",
            *(
                []
                if model.high_specificity_point is None
                else [f"high_specificity_threshold={model.high_specificity_point:g}"]
            ),
            f"architecture={model.architecture}",
            f"input_size={model.input_size}",
            f"training_data={model.training_data}",
        ]
        if model.disclaimer:
            values.append(f"disclaimer={model.disclaimer}")
    return hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version, parameters=values, manufacturer=MANUFACTURER
    )


def contributing_equipment(findings: StudyFindings, created: datetime, root: str = "") -> list[Dataset]:
    """Contributing Equipment Sequence items, one per model (IHE AIR Rev. 1.1 Section 6.5.3.1;
    PS3.3 C.7.5.1 General Equipment: Contribution Date Time and Description)."""
    items = []
    for key, model in (("fracture", findings.fracture_model), ("garden", findings.garden_model)):
        item = Dataset()
        purpose = Dataset()
        purpose.CodeValue = codes.PROCESSING_ALGORITHM.value
        purpose.CodingSchemeDesignator = codes.PROCESSING_ALGORITHM.scheme_designator
        purpose.CodeMeaning = codes.PROCESSING_ALGORITHM.meaning
        item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
        item.Manufacturer = MANUFACTURER
        item.ManufacturerModelName = model.name[:64]
        item.SoftwareVersions = model.version[:64]
        item.DeviceUID = device_uid(model.label, root)
        item.ContributionDateTime = created.strftime("%Y%m%d%H%M%S%z")
        item.ContributionDescription = CONTRIBUTION[key]
        items.append(item)
    return items


def add_result_context(
    dataset: Dataset, findings: StudyFindings, schemes: set[str], created: datetime, root: str = ""
) -> None:
    """Series Date/Time, Contributing Equipment (AIR; only the models) and the private coding schemes used."""
    dataset.SeriesDate = created.strftime("%Y%m%d")
    dataset.SeriesTime = created.strftime("%H%M%S")
    dataset.ContributingEquipmentSequence = DicomSequence(contributing_equipment(findings, created, root))
    declared = codes.coding_scheme_identification(schemes | {codes.IHE_SCHEME})
    if declared:
        dataset.CodingSchemeIdentificationSequence = DicomSequence(declared)


def _percent(name: Code, probability: float, algorithm: hd.sr.AlgorithmIdentification | None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=percent(probability), unit=codes.PERCENT, algorithm_id=algorithm)


def hip_label(hip: HipFinding) -> str:
    """The Tracking Identifier a viewer shows as the group's label: "Right hip", "Left hip"."""
    return "Hip (side unknown)" if hip.laterality not in ("R", "L") else f"{hip.side.capitalize()} hip"


def _hip_group(
    hip: HipFinding, findings: StudyFindings, source: Dataset, group_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [_percent(codes.FRACTURE_PROBABILITY, hip.fracture_probability, None)]
    evaluations = None
    if hip.garden_applies:
        garden = algorithm_identification(findings.garden_model, parameters=False)
        evaluations = [
            hd.sr.QualitativeEvaluation(codes.GARDEN_STAGE, codes.garden_stage(hip.garden_stage)),
            hd.sr.QualitativeEvaluation(codes.DISPLACED, codes.YES if hip.displaced else codes.NO),
        ]
        measurements.append(_percent(codes.DISPLACED_PROBABILITY, hip.displaced_probability, garden))
        measurements += [
            _percent(codes.garden_probability(stage), p, garden)
            for stage, p in zip(GARDEN_STAGES, hip.garden_probabilities, strict=True)
        ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=group_uid, identifier=hip_label(hip)),
        finding_type=codes.finding(hip.fractured, hip.site),
        algorithm_id=algorithm_identification(findings.fracture_model),
        finding_sites=[
            hd.sr.FindingSite(anatomic_location=codes.HIP_JOINT, laterality=codes.LATERALITY.get(hip.laterality or ""))
        ],
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=source.SOPClassUID, referenced_sop_instance_uid=source.SOPInstanceUID
            )
        ],
    )


def build_measurement_report(
    source: pydicom.Dataset,
    findings: StudyFindings,
    *,
    uid_root: str = "",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    created: datetime | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 Measurement Report of ``findings`` on the analysed instance ``source``.

    Same study and patient as ``source``, a series of its own. Unless given, the Series and SOP
    Instance UIDs are derived under ``uid_root`` from the study, the models, the instance and
    :func:`content_key`, so the same result always has the same UIDs. ``created`` (default now, local
    time with its UTC offset) is the Series Date/Time and the models' Contribution DateTime.
    """
    created = created or datetime.now().astimezone()
    labels = model_labels(findings)
    key = content_key(findings)
    series_instance_uid = series_instance_uid or result_series_uid(
        str(source.StudyInstanceUID), labels, str(source.SOPInstanceUID), "sr", content=key, root=uid_root
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DEVICE,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(labels, uid_root), name=DEVICE_NAME, manufacturer_name=MANUFACTURER, model_name=labels[:64]
        ),
    )
    groups = [
        _hip_group(
            hip,
            findings,
            source,
            derived_uid(uid_root, "hipcad-hip", str(source.SOPInstanceUID), key, hip.laterality or str(index)),
        )
        for index, hip in enumerate(findings.hips)
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.procedure_reported([hip.laterality for hip in findings.hips]),
        imaging_measurements=groups,
        title=codes.REPORT_TITLE,
        referenced_images=[source],
    )
    _add_image_laterality(report, source)
    _separate(report)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or result_instance_uid(series_instance_uid, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.ContentDate, sr.ContentTime = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    sr.SeriesDescription = series_description(findings, "SR")
    sr.ManufacturerModelName = DEVICE_NAME
    sr.SoftwareVersions = [m.label[:64] for m in (findings.fracture_model, findings.garden_model)]
    add_result_context(sr, findings, _schemes(report), created, uid_root)
    return sr


def _add_image_laterality(report: hd.sr.MeasurementReport, source: Dataset) -> None:
    """TID 1602 row "Image Laterality" in the source's Image Library Entry, from (0020,0062)."""
    laterality = codes.IMAGE_LATERALITIES.get(str(source.get("ImageLaterality", "")))
    if laterality is None:
        return
    for library in report[0].ContentSequence:
        if library.ConceptNameCodeSequence[0].CodeValue != "111028":  # Image Library
            continue
        for group in library.ContentSequence:
            for entry in (item for item in group.ContentSequence if item.ValueType == "IMAGE"):
                entry.ContentSequence.append(
                    hd.sr.CodeContentItem(
                        name=codes.IMAGE_LATERALITY,
                        value=laterality,
                        relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
                    )
                )


def _separate(content: Sequence[Dataset]) -> None:
    """Every CONTAINER ``SEPARATE``: its items are separate statements, each shown with its name."""
    for item in content:
        if item.ValueType == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
        _separate(item.get("ContentSequence", []))


def _schemes(content: Sequence[Dataset] | Dataset) -> set[str]:
    """All coding scheme designators used in a content tree."""
    found: set[str] = set()

    def walk(item: Dataset) -> None:
        for element in item:
            if element.VR == "SQ":
                for child in element.value:
                    walk(child)
            elif element.keyword == "CodingSchemeDesignator":
                found.add(str(element.value))

    for item in content if isinstance(content, Sequence) else [content]:
        walk(item)
    return found
