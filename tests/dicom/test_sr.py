"""The AI result as a TID 1500 Comprehensive 3D SR: valid IOD, content tree as the findings say."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from cds_service.dicom import codes
from cds_service.dicom.sr import build_measurement_report, device_uid, model_labels
from cds_service.training.phantoms import write_sample_study
from tests.dicom.dciodvfy import assert_valid
from tests.findings_factory import findings, model


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> pydicom.Dataset:
    return pydicom.dcmread(write_sample_study(tmp_path_factory.mktemp("study"), seed=7))


@pytest.fixture(scope="module")
def written(source: pydicom.Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A fractured right hip (Garden III) and a normal left hip, written and validated."""
    folder = tmp_path_factory.mktemp("sr")
    report = build_measurement_report(source, findings(right=0.94, left=0.03, garden=(0.02, 0.04, 0.64, 0.30)))
    validation = assert_valid(report, folder, "sr.dcm")
    return folder / "sr.dcm", validation


def _code(item) -> tuple[str, str]:
    """(code value, scheme) of a coded concept or of a CODE content item."""
    concept = item if hasattr(item, "scheme_designator") else item.value
    return (concept.value, concept.scheme_designator)


def test_sr_is_a_valid_comprehensive_3d_sr(written):
    path, validation = written
    assert validation.iod == "Comprehensive3DSR"
    assert not validation.errors
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage


def test_sr_header_study_patient_flags_and_series(written, source):
    ds = pydicom.dcmread(written[0])
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.VerificationFlag == "UNVERIFIED"
    assert ds.CompletionFlag == "COMPLETE"
    assert ds.PreliminaryFlag == "PRELIMINARY"
    assert "NOT FOR CLINICAL USE" in ds.SeriesDescription and len(ds.SeriesDescription) <= 64
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_contributing_equipment_as_ihe_air_states_it(written):
    ds = pydicom.dcmread(written[0])
    items = [
        item
        for item in ds.ContributingEquipmentSequence
        if item.PurposeOfReferenceCodeSequence[0].CodingSchemeDesignator == "99IHE"
    ]
    assert [item.ManufacturerModelName for item in items] == ["fracture", "garden"]
    for item in items:
        purpose = item.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
            "Newcode1",
            "99IHE",
            "Processing Algorithm",
        )
        assert item.Manufacturer == "hipcad" and item.SoftwareVersions == "1" and item.DeviceUID
    declared = {item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence}
    assert declared == {codes.LOCAL_SCHEME, codes.IHE_SCHEME}


def test_content_tree_per_hip(written, source):
    sr = hd.sr.srread(written[0])
    assert sr.VerificationFlag == "UNVERIFIED"
    content = hd.sr.MeasurementReport.from_sequence([_root(sr)])
    hips = content.get_image_measurement_groups()
    assert len(hips) == 2
    right, left = hips
    assert right.tracking_identifier == "right hip" and left.tracking_identifier == "left hip"
    (site_r,) = right.finding_sites
    assert _code(site_r) == ("24136001", "SCT") and _code(site_r.laterality) == ("24028007", "SCT")
    assert _code(left.finding_sites[0].laterality) == ("7771000", "SCT")
    assert _code(right.finding_type) == ("359820003", "SCT")  # neck-of-femur fracture
    assert _code(left.finding_type) == ("359817006", "SCT")

    def evaluations(group):
        return {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}

    assert evaluations(right) == {"121052": "121053", "GARDEN": "GARDEN-III", "DISPLACED": "373066001"}
    assert evaluations(left) == {"121052": "121054"}  # absent; no Garden stage for a normal hip

    def measurements(group):
        return {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}

    assert measurements(right)["FXPROB"] == (pytest.approx(94.0), "%")
    assert measurements(right)["DISPPROB"] == (pytest.approx(94.0), "%")
    assert measurements(right)["GARDENPROB-III"] == (pytest.approx(64.0), "%")
    assert set(measurements(left)) == {"FXPROB"} and measurements(left)["FXPROB"][0] == pytest.approx(3.0)

    algorithm = _texts(right, depth=1)
    assert algorithm["111001"] == ["fracture"] and algorithm["111003"] == ["1"]  # Algorithm Name / Version
    assert "operating_threshold=0.5" in algorithm["111002"]  # Algorithm Parameters
    for group in hips:
        (image,) = group.source_images
        assert image.referenced_sop_instance_uid == source.SOPInstanceUID
        assert image.referenced_sop_class_uid == source.SOPClassUID
        for measurement in group.get_measurements():
            assert measurement.referenced_images[0].referenced_sop_instance_uid == source.SOPInstanceUID
    garden_measurements = [m for m in right.get_measurements() if m.name.value.startswith("GARDENPROB")]
    assert len(garden_measurements) == 4
    assert {name for m in garden_measurements for name in _texts(m)["111001"]} == {"garden"}


def _texts(template, depth: int = 99) -> dict[str, list[str]]:
    """TEXT content items below a template's root items (to ``depth`` levels) by concept code value."""
    found: dict[str, list[str]] = {}

    def walk(node: pydicom.Dataset, level: int) -> None:
        for child in node.get("ContentSequence", []):
            if child.ValueType == "TEXT":
                found.setdefault(child.ConceptNameCodeSequence[0].CodeValue, []).append(child.TextValue)
            if level < depth:
                walk(child, level + 1)

    for root in template:
        walk(root, 1)
    return found


def _root(sr: pydicom.Dataset) -> pydicom.Dataset:
    root = pydicom.Dataset()
    for keyword in (
        "ValueType",
        "ConceptNameCodeSequence",
        "ContinuityOfContent",
        "ContentTemplateSequence",
        "ContentSequence",
    ):
        if keyword in sr:
            setattr(root, keyword, sr.get(keyword))
    return root


def test_device_observer_uid_follows_the_model_versions(written):
    ds = pydicom.dcmread(written[0])
    observer = {
        item.ConceptNameCodeSequence[0].CodeValue: item for item in ds.ContentSequence if item.ValueType == "UIDREF"
    }
    uid = observer["121012"].UID
    assert uid == device_uid("fracture@1+garden@1")
    assert device_uid("fracture@2+garden@1") != uid
    assert device_uid("fracture@1+garden@1") == uid  # deterministic


def test_new_sop_instance_per_call_unless_given(source):
    one, two = (build_measurement_report(source, findings()) for _ in range(2))
    assert one.SOPInstanceUID != two.SOPInstanceUID
    fixed = build_measurement_report(source, findings(), series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5")
    assert (fixed.SeriesInstanceUID, fixed.SOPInstanceUID) == ("1.2.3.4", "1.2.3.4.5")


def test_real_models_are_not_labelled_synthetic(source):
    real = findings(training_data="hospital-xyz-2026")
    assert "NOT FOR CLINICAL USE" not in build_measurement_report(source, real).SeriesDescription
    assert model_labels(real) == "fracture@1+garden@1"
    assert model("x", ("a",)).label == "x@1"


def test_unknown_laterality_still_valid(source, tmp_path):
    base = findings()
    hips = [type(base.hips[0])(None, 0.8, True, (0.1, 0.7, 0.1, 0.1))]
    odd = type(base)(
        hips=hips,
        fracture_model=base.fracture_model,
        garden_model=base.garden_model,
        sop_instance_uid=base.sop_instance_uid,
    )
    report = build_measurement_report(source, odd)
    assert_valid(report, tmp_path)
    group = hd.sr.MeasurementReport.from_sequence([_root(hd.sr.srread(tmp_path / "object.dcm"))])
    (hip,) = group.get_image_measurement_groups()
    assert hip.finding_sites[0].laterality is None
