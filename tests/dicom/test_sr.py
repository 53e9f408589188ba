"""The AI result as a TID 1500 Comprehensive 3D SR: valid IOD, content tree as the findings say,
readable in a generic viewer (dcmtk's dsr2html), UIDs that follow the content."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from cds_service.dicom import codes
from cds_service.dicom.sr import build_measurement_report, content_key, device_uid, model_labels
from cds_service.domain import FEMORAL_NECK, TROCHANTERIC, UNCERTAIN_SITE, HipFinding, StudyFindings
from cds_service.training.phantoms import write_sample_study
from tests.conftest import require
from tests.dicom.dciodvfy import assert_valid
from tests.findings_factory import findings, model

GARDEN_III = (0.02, 0.04, 0.64, 0.30)
CREATED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=1)))
#: SNOMED CT codes of any hip fracture finding the SR may use.
FRACTURE_CODES = {"5913000", "208548007", "359817006", "359820003"}


def study(*hips: HipFinding, **kw) -> StudyFindings:
    base = findings(**kw)
    return replace(base, hips=list(hips))


def right(probability: float = 0.94, site: str = FEMORAL_NECK, garden=GARDEN_III) -> HipFinding:
    return HipFinding("R", probability, probability >= 0.5, garden, site)


def left(probability: float = 0.03, site: str = UNCERTAIN_SITE) -> HipFinding:
    return HipFinding("L", probability, probability >= 0.5, (0.25, 0.25, 0.25, 0.25), site)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> pydicom.Dataset:
    return pydicom.dcmread(write_sample_study(tmp_path_factory.mktemp("study"), seed=7))


@pytest.fixture(scope="module")
def written(source: pydicom.Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A femoral-neck fracture of the right hip (Garden III) and a normal left hip, written and validated."""
    folder = tmp_path_factory.mktemp("sr")
    report = build_measurement_report(source, study(right(), left()), created=CREATED)
    validation = assert_valid(report, folder, "sr.dcm")
    return folder / "sr.dcm", validation


def _code(item) -> tuple[str, str]:
    """(code value, scheme) of a coded concept or of a CODE content item."""
    concept = item if hasattr(item, "scheme_designator") else item.value
    return (concept.value, concept.scheme_designator)


def _groups(sr: pydicom.Dataset) -> list:
    return hd.sr.MeasurementReport.from_sequence([_root(sr)]).get_image_measurement_groups()


def _all_codes(dataset: pydicom.Dataset) -> set[str]:
    """Every Code Value in ``dataset``, nested sequences included."""
    return {str(element.value) for element in dataset.iterall() if element.keyword == "CodeValue"}


def _all_uids(dataset: pydicom.Dataset) -> set[str]:
    """Every UID in ``dataset``, nested sequences and multi-valued elements included."""
    return {
        str(value)
        for element in dataset.iterall()
        if element.VR == "UI" and element.value
        for value in (element.value if element.VM > 1 else [element.value])
    }


def test_sr_is_a_valid_comprehensive_3d_sr(written):
    path, validation = written
    assert validation.iod == "Comprehensive3DSR"
    assert not validation.errors
    assert pydicom.dcmread(path).SOPClassUID == pydicom.uid.Comprehensive3DSRStorage


def test_sr_header_study_patient_flags_series_and_dates(written, source):
    ds = pydicom.dcmread(written[0])
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert (ds.VerificationFlag, ds.CompletionFlag, ds.PreliminaryFlag) == ("UNVERIFIED", "COMPLETE", "PRELIMINARY")
    assert "NOT FOR CLINICAL USE" in ds.SeriesDescription and len(ds.SeriesDescription) <= 64
    assert (ds.SeriesDate, ds.SeriesTime) == ("20260304", "050607")
    assert (ds.ContentDate, ds.ContentTime) == ("20260304", "050607")
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_contributing_equipment_is_the_algorithms_only_with_date_and_description(source):
    with_equipment = pydicom.Dataset(source)
    scanner = pydicom.Dataset()
    scanner.Manufacturer, scanner.ManufacturerModelName = "Acme", "CR 9000"
    with_equipment.ContributingEquipmentSequence = [scanner]
    ds = build_measurement_report(with_equipment, study(right(), left()), created=CREATED)
    items = list(ds.ContributingEquipmentSequence)
    assert [item.ManufacturerModelName for item in items] == ["fracture", "garden"]  # not the source's scanner
    for item in items:
        purpose = item.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
            "Newcode1",
            "99IHE",
            "Processing Algorithm",
        )
        assert item.Manufacturer == "hipcad" and item.SoftwareVersions == "1" and item.DeviceUID
        assert item.ContributionDateTime == "20260304050607+0100"
        assert "AI" in item.ContributionDescription
    declared = {item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence}
    assert declared == {codes.LOCAL_SCHEME, codes.IHE_SCHEME}


def test_image_library_holds_the_source_image(written, source):
    ds = pydicom.dcmread(written[0])
    (library,) = [i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Image Library"]
    entries = [e for group in library.ContentSequence for e in group.ContentSequence if e.ValueType == "IMAGE"]
    (entry,) = entries
    assert entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    descriptors = {d.ConceptNameCodeSequence[0].CodeMeaning: d for d in entry.ContentSequence}
    assert descriptors["Modality"].ConceptCodeSequence[0].CodeValue == "CR"
    assert descriptors["Image Laterality"].ConceptCodeSequence[0].CodeValue == "51440002"  # B: bilateral


def test_femoral_neck_fracture_and_normal_hip(written, source):
    right_group, left_group = _groups(hd.sr.srread(written[0]))
    assert right_group.tracking_identifier == "Right hip" and left_group.tracking_identifier == "Left hip"
    (site_r,) = right_group.finding_sites
    assert _code(site_r) == ("24136001", "SCT") and _code(site_r.laterality) == ("24028007", "SCT")
    assert _code(left_group.finding_sites[0].laterality) == ("7771000", "SCT")
    assert _code(right_group.finding_type) == ("5913000", "SCT")  # fracture of neck of femur
    assert _code(left_group.finding_type) == ("NOFX", codes.LOCAL_SCHEME)  # a finding of no fracture

    def evaluations(group):
        return {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}

    def measurements(group):
        return {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}

    assert evaluations(right_group) == {"GARDEN": "GARDEN-III", "DISPLACED": "373066001"}
    assert measurements(right_group)["FXPROB"] == (pytest.approx(94.0), "%")
    assert measurements(right_group)["DISPPROB"] == (pytest.approx(94.0), "%")
    assert measurements(right_group)["GARDENPROB-III"] == (pytest.approx(64.0), "%")
    assert evaluations(left_group) == {}  # no presence qualifier, no Garden stage for a normal hip
    assert set(measurements(left_group)) == {"FXPROB"}
    assert measurements(left_group)["FXPROB"][0] == pytest.approx(3.0)

    algorithm = _texts(right_group, depth=1)
    assert algorithm["111001"] == ["fracture"] and algorithm["111003"] == ["1"]  # Algorithm Name / Version
    assert "operating_threshold=0.5" in algorithm["111002"]  # Algorithm Parameters
    for group in (right_group, left_group):
        (image,) = group.source_images
        assert image.referenced_sop_instance_uid == source.SOPInstanceUID
    garden_measurements = [m for m in right_group.get_measurements() if m.name.value.startswith("GARDENPROB")]
    assert len(garden_measurements) == 4
    assert {name for m in garden_measurements for name in _texts(m)["111001"]} == {"garden"}


def test_a_trochanteric_fracture_gets_no_garden_stage(source, tmp_path):
    report = build_measurement_report(source, study(right(site=TROCHANTERIC), left()))
    assert_valid(report, tmp_path)
    right_group, _ = _groups(report)
    assert _code(right_group.finding_type) == ("208548007", "SCT")
    found = _all_codes(report)
    assert not {c for c in found if c.startswith(("GARDEN", "DISP"))}


def test_an_uncertain_site_is_a_hip_fracture_without_garden(source):
    report = build_measurement_report(source, study(right(site=UNCERTAIN_SITE), left()))
    right_group, _ = _groups(report)
    assert _code(right_group.finding_type) == ("359817006", "SCT")
    assert not {c for c in _all_codes(report) if c.startswith("GARDEN")}


def test_a_normal_study_has_no_fracture_finding(source):
    report = build_measurement_report(source, study(right(0.1), left(0.2)))
    found = _all_codes(report)
    assert not found & FRACTURE_CODES
    assert "121052" not in found  # no "Presence of property" qualifier on a fracture finding
    assert [_code(g.finding_type) for g in _groups(report)] == [("NOFX", codes.LOCAL_SCHEME)] * 2


@pytest.mark.parametrize(
    ("hips", "procedure"),
    [((right(), left()), "30768-6"), ((right(),), "26132-1"), ((left(),), "26131-3")],
)
def test_procedure_reported_per_laterality(source, hips, procedure):
    report = build_measurement_report(source, study(*hips))
    reported = [
        i.ConceptCodeSequence[0].CodeValue
        for i in report.ContentSequence
        if i.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    assert reported == [procedure]


def _dsr2html_text(path: Path) -> str:
    require(shutil.which("dsr2html") is not None, "dsr2html (dcmtk) is not installed (run .ci/install-tools.sh)")
    out = subprocess.run(["dsr2html", str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", out)))


def test_dsr2html_reads_as_a_report_naming_each_hip_and_value(written):
    text = _dsr2html_text(written[0])
    assert 'Tracking Identifier = "Right hip"' in text and 'Tracking Identifier = "Left hip"' in text
    for named in (
        "Finding: Fracture of neck of femur",
        "Finding: No hip fracture suspected (AI)",
        "Fracture probability (AI): 94.0 %",
        "Fracture probability (AI): 3.0 %",
        "Probability of displacement (Garden III-IV): 94.0 %",
        "Probability of Garden III, if femoral-neck fracture: 64.0 %",
        "Garden stage (AI, if femoral-neck fracture): Garden III",
        "Displaced (Garden III-IV, AI): Yes",
        "Laterality = Right",
        "Laterality = Left",
        "Procedure reported = XR Pelvis and Hip - bilateral Views",
    ):
        assert named in text, named
    assert not re.search(r"\d % \d", text)  # no run of unnamed values ("98.82 % 99.86 % …")


def test_same_content_same_uids_new_content_new_uids(source):
    def uids(result: StudyFindings, root: str = "") -> tuple[str, str]:
        report = build_measurement_report(source, result, uid_root=root)
        return report.SeriesInstanceUID, report.SOPInstanceUID

    first = uids(study(right(), left()))
    assert uids(study(right(), left())) == first  # a re-analysis saying the same: idempotent
    assert uids(study(right(0.940000001), left())) == first  # below the stored precision (0.01 %)
    changed = [
        study(right(0.95), left()),  # another probability
        study(right(site=TROCHANTERIC), left()),  # another site
        study(right(garden=(0.02, 0.04, 0.30, 0.64)), left()),  # another Garden stage
        study(right(), left(0.7)),  # another call
        replace(study(right(), left()), fracture_model=replace(findings().fracture_model, version="2")),
    ]
    seen = {first}
    for result in changed:
        series, sop = uids(result)
        assert series not in {s for s, _ in seen} and sop not in {p for _, p in seen}
        seen.add((series, sop))
    assert len({content_key(r) for r in changed}) == len(changed)


def test_every_uid_made_is_under_the_configured_root(source):
    root = "1.3.6.1.4.1.99999.7"
    report = build_measurement_report(source, study(right(), left()), uid_root=root)
    own = _all_uids(report) - _all_uids(source) - {report.SOPClassUID, source.SOPClassUID, "1.2.840.10008.1.2.1"}
    own -= {str(u) for u in (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.PYDICOM_IMPLEMENTATION_UID)}
    own -= {str(report.file_meta.ImplementationClassUID)} if "ImplementationClassUID" in report.file_meta else set()
    assert own and all(uid.startswith(root + ".") for uid in own), own
    assert all(len(uid) <= 64 and pydicom.uid.UID(uid).is_valid for uid in own)
    default = build_measurement_report(source, study(right(), left()))
    assert default.SOPInstanceUID.startswith("2.25.") and default.SeriesInstanceUID.startswith("2.25.")
    assert not default.SeriesInstanceUID.startswith(pydicom.uid.PYDICOM_ROOT_UID)


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


def test_real_models_are_not_labelled_synthetic(source):
    real = findings(training_data="hospital-xyz-2026")
    assert "NOT FOR CLINICAL USE" not in build_measurement_report(source, real).SeriesDescription
    assert model_labels(real) == "fracture@1+garden@1"
    assert model("x", ("a",)).label == "x@1"


def test_unknown_laterality_still_valid(source, tmp_path):
    report = build_measurement_report(source, study(HipFinding(None, 0.8, True, (0.1, 0.7, 0.1, 0.1))))
    assert_valid(report, tmp_path)
    (hip,) = _groups(hd.sr.srread(tmp_path / "object.dcm"))
    assert hip.finding_sites[0].laterality is None
    assert hip.tracking_identifier == "Hip (side unknown)"
