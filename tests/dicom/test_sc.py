"""The heat-map overlay as a Secondary Capture: valid IOD, same study, new series, source referenced."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from cds_service.dicom.sc import build_heatmap_sc
from cds_service.explain.heatmap import overlay
from cds_service.training.phantoms import write_sample_study
from tests.dicom.dciodvfy import assert_valid
from tests.findings_factory import findings


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> pydicom.Dataset:
    return pydicom.dcmread(write_sample_study(tmp_path_factory.mktemp("study"), seed=7))


@pytest.fixture(scope="module")
def overlay_rgb(source: pydicom.Dataset) -> np.ndarray:
    """The radiograph at display size with a heat blob over the right hip (image left), as the viewer shows it."""
    grey = source.pixel_array[::4, ::4].astype(np.uint8)
    rows, cols = grey.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    heat = np.exp(-(((yy - rows * 0.45) / (rows * 0.1)) ** 2 + ((xx - cols * 0.3) / (cols * 0.08)) ** 2))
    return overlay(grey, heat.astype(np.float32))


def test_sc_is_valid_and_derived_from_the_source(source, overlay_rgb, tmp_path):
    sc = build_heatmap_sc(source, overlay_rgb, findings=findings())
    validation = assert_valid(sc, tmp_path, "sc.dcm")
    assert validation.iod == "SCImage"
    ds = pydicom.dcmread(tmp_path / "sc.dcm")
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.BurnedInAnnotation == "YES"
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    np.testing.assert_array_equal(ds.pixel_array, overlay_rgb)
    (reference,) = ds.SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert ds.DerivationCodeSequence[0].CodeValue == "130401"  # Visual explanation
    assert "NOT FOR CLINICAL USE" in ds.SeriesDescription
    models = [i.ManufacturerModelName for i in ds.ContributingEquipmentSequence if "DeviceUID" in i]
    assert models == ["fracture", "garden"]


def test_sc_without_findings_and_with_given_uids(source, overlay_rgb, tmp_path):
    sc = build_heatmap_sc(source, overlay_rgb, series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.1")
    assert_valid(sc, tmp_path)
    assert (sc.SeriesInstanceUID, sc.SOPInstanceUID) == ("1.2.3.4", "1.2.3.4.1")


def test_sc_refuses_a_non_rgb_overlay(source):
    with pytest.raises(ValueError, match="RGB uint8"):
        build_heatmap_sc(source, np.zeros((10, 10), dtype=np.uint8))
