"""The AI result as a DICOM Comprehensive 3D SR: TID 1500 Measurement Report (highdicom).

One SR per analysed instance, in the source study, in a series of its own. Per hip one TID 1501
measurement group: finding type (hip fracture; neck-of-femur fracture when the Garden stage is
reported), finding site (hip joint, with laterality), the model's call (presence of property:
present/absent), for a fractured hip the Garden stage and whether it is displaced, and the
probabilities as measurements in percent, each referencing the source image. The models are
identified three times, as IHE AI Results (AIR) asks: TID 4019 Algorithm Identification (name,
version, parameters with the operating threshold) in the groups, the TID 1004 device observer
(a Device Observer UID derived from the model labels, so it changes with a model version), and one
Contributing Equipment item per model. The report is UNVERIFIED and PRELIMINARY, and COMPLETE.

Codes come from :mod:`cds_service.dicom.codes` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from cds_service.dicom import codes
from cds_service.findings import GARDEN_STAGES, HipFinding, StudyFindings
from cds_service.inference.client import ModelInfo

MANUFACTURER = "hipcad"
DEVICE_NAME = "hipcad hip-fracture AI"
SR_SERIES_NUMBER = 901
#: Training data value that marks models as trained on this repository's synthetic phantoms.
SYNTHETIC = "synthetic-phantoms"


def model_labels(findings: StudyFindings) -> str:
    """The models behind a result as one string (``fracture@1+garden@1``): part of every derived UID."""
    return f"{findings.fracture_model.label}+{findings.garden_model.label}"


def device_uid(labels: str) -> str:
    """Deterministic Device (Observer) UID of a model or model set: a new version gives a new UID."""
    return generate_uid(entropy_srcs=["hipcad-device", labels])


def not_for_clinical_use(findings: StudyFindings) -> bool:
    models = (findings.fracture_model, findings.garden_model)
    return any(m.training_data == SYNTHETIC or m.untrained for m in models)


def series_description(findings: StudyFindings, kind: str) -> str:
    """Series Description (LO, at most 64 characters) of a result series."""
    if not_for_clinical_use(findings):
        return f"AI {kind} synthetic-trained - NOT FOR CLINICAL USE"
    return f"AI hip fracture {kind} (hipcad)"


def algorithm_identification(model: ModelInfo) -> hd.sr.AlgorithmIdentification:
    """TID 4019: name, version and the parameters that decide the output (operating threshold first)."""
    parameters = [
        f"operating_threshold={model.operating_threshold:g}",
        f"architecture={model.architecture}",
        f"input_size={model.input_size}",
        f"training_data={model.training_data}",
    ]
    if model.disclaimer:
        parameters.append(f"disclaimer={model.disclaimer}")
    return hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version, parameters=parameters, manufacturer=MANUFACTURER
    )


def contributing_equipment(findings: StudyFindings) -> list[Dataset]:
    """Contributing Equipment Sequence items, one per model, as IHE AIR Rev. 1.1 Section 6.5.3.1 asks."""
    items = []
    for model in (findings.fracture_model, findings.garden_model):
        item = Dataset()
        purpose = Dataset()
        purpose.CodeValue = codes.PROCESSING_ALGORITHM.value
        purpose.CodingSchemeDesignator = codes.PROCESSING_ALGORITHM.scheme_designator
        purpose.CodeMeaning = codes.PROCESSING_ALGORITHM.meaning
        item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
        item.Manufacturer = MANUFACTURER
        item.ManufacturerModelName = model.name[:64]
        item.SoftwareVersions = model.version[:64]
        item.DeviceUID = device_uid(model.label)
        items.append(item)
    return items


def add_result_context(dataset: Dataset, findings: StudyFindings, schemes: set[str]) -> None:
    """Contributing Equipment (AIR) and the declaration of the private coding schemes used."""
    existing = list(dataset.get("ContributingEquipmentSequence", []))
    dataset.ContributingEquipmentSequence = DicomSequence(existing + contributing_equipment(findings))
    declared = codes.coding_scheme_identification(schemes | {codes.IHE_SCHEME})
    if declared:
        dataset.CodingSchemeIdentificationSequence = DicomSequence(declared)


def _percent(name: pydicom.sr.coding.Code, probability: float, model: ModelInfo, source: Dataset) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=name,
        value=round(100.0 * float(probability), 2),
        unit=codes.PERCENT,
        algorithm_id=algorithm_identification(model),
        referenced_images=[
            hd.sr.SourceImageForMeasurement(
                referenced_sop_class_uid=source.SOPClassUID, referenced_sop_instance_uid=source.SOPInstanceUID
            )
        ],
    )


def _hip_group(
    hip: HipFinding, findings: StudyFindings, source: Dataset, group_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    laterality = codes.LATERALITY.get(hip.laterality or "")
    evaluations = [hd.sr.QualitativeEvaluation(codes.PRESENCE, codes.PRESENT if hip.fractured else codes.ABSENT)]
    measurements = [_percent(codes.FRACTURE_PROBABILITY, hip.fracture_probability, findings.fracture_model, source)]
    if hip.fractured:
        evaluations += [
            hd.sr.QualitativeEvaluation(codes.GARDEN_STAGE, codes.garden_stage(hip.garden_stage)),
            hd.sr.QualitativeEvaluation(codes.DISPLACED, codes.YES if hip.displaced else codes.NO),
        ]
        measurements.append(
            _percent(codes.DISPLACED_PROBABILITY, hip.displaced_probability, findings.garden_model, source)
        )
        measurements += [
            _percent(codes.garden_probability(stage), p, findings.garden_model, source)
            for stage, p in zip(GARDEN_STAGES, hip.garden_probabilities, strict=True)
        ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=group_uid, identifier=f"{hip.side} hip"),
        finding_type=codes.NECK_OF_FEMUR_FRACTURE if hip.fractured else codes.HIP_FRACTURE,
        algorithm_id=algorithm_identification(findings.fracture_model),
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.HIP_JOINT, laterality=laterality)],
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
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 Measurement Report of ``findings`` on the analysed instance ``source``.

    Same study and patient as ``source``; a new series (``series_instance_uid``, fresh when not
    given) and a new SOP Instance UID per call unless ``sop_instance_uid`` is given (pass the
    deterministic UIDs of :mod:`cds_service.dicom.stow` to make a re-analysis idempotent).
    """
    labels = model_labels(findings)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DEVICE,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(labels), name=DEVICE_NAME, manufacturer_name=MANUFACTURER, model_name=labels[:64]
        ),
    )
    groups = [
        _hip_group(
            hip,
            findings,
            source,
            generate_uid(entropy_srcs=["hipcad-hip", source.SOPInstanceUID, labels, hip.laterality or str(index)]),
        )
        for index, hip in enumerate(findings.hips)
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=groups,
        title=codes.REPORT_TITLE,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = series_description(findings, "SR")
    sr.ManufacturerModelName = DEVICE_NAME
    sr.SoftwareVersions = [m.label[:64] for m in (findings.fracture_model, findings.garden_model)]
    add_result_context(sr, findings, _schemes(report))
    return sr


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
