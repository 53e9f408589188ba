"""The heat-map Secondary Capture: valid IOD, JPEG baseline at the source's resolution, caption,
laterality and colour scale burned in, source referenced."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from cds_service.dicom.decode import decode_dataset
from cds_service.dicom.results import heatmap_sc_pixels, result_objects
from cds_service.dicom.sc import CAPTION, SC_MAX_EDGE, annotate, build_heatmap_sc, sc_shape
from cds_service.dicom.uids import result_instance_uid
from cds_service.explain.heatmap import HipHeatmap, heat_canvas, overlay
from cds_service.training.phantoms import write_sample_study
from tests.dicom.dciodvfy import assert_valid
from tests.findings_factory import findings

#: Largest SC file accepted for this 2039 × 1380 phantom (the uncompressed RGB SC at 38 % was 1.2 MB).
MAX_BYTES = 1_000_000


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> pydicom.Dataset:
    return pydicom.dcmread(write_sample_study(tmp_path_factory.mktemp("study"), seed=7))


@pytest.fixture(scope="module")
def hips(source: pydicom.Dataset) -> list[HipHeatmap]:
    """A hot blob on the right hip (image left), a faint one on the left hip (mirrored crop)."""
    rows, cols = int(source.Rows), int(source.Columns)
    yy, xx = np.mgrid[0:64, 0:64]
    cam = np.exp(-(((yy - 32) / 10.0) ** 2 + ((xx - 32) / 10.0) ** 2)).astype(np.float32)
    return [
        HipHeatmap("R", cam, False, (0, 0, cols // 2, rows)),
        HipHeatmap("L", cam * 0.3, True, (cols // 2, 0, cols, rows)),
    ]


@pytest.fixture(scope="module")
def sc_file(source, hips, tmp_path_factory):
    _, sc = result_objects(source, findings(), hips, uid_root="")
    folder = tmp_path_factory.mktemp("sc")
    validation = assert_valid(sc, folder, "sc.dcm")
    return folder / "sc.dcm", validation


def test_sc_is_valid_and_derived_from_the_source(sc_file, source):
    path, validation = sc_file
    assert validation.iod == "SCImage" and not validation.errors
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.SOPInstanceUID == result_instance_uid(ds.SeriesInstanceUID, "sc")
    assert ds.BurnedInAnnotation == "YES"
    (reference,) = ds.SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert ds.DerivationCodeSequence[0].CodeValue == "130401"  # Visual explanation
    assert "NOT FOR CLINICAL USE" in ds.SeriesDescription
    assert ds.SeriesDate and ds.SeriesTime
    models = [i.ManufacturerModelName for i in ds.ContributingEquipmentSequence]
    assert models == ["fracture", "garden"]
    assert all(i.ContributionDateTime and i.ContributionDescription for i in ds.ContributingEquipmentSequence)


def test_sc_is_jpeg_baseline_at_the_source_resolution_and_bounded(sc_file, source, hips):
    path, _ = sc_file
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.SamplesPerPixel == 3
    assert ds["PixelData"].is_undefined_length  # encapsulated
    assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    assert float(ds.LossyImageCompressionRatio) > 6
    assert (ds.Rows, ds.Columns) == (source.Rows, source.Columns)
    assert path.stat().st_size < MAX_BYTES
    decoded = ds.pixel_array  # RGB after pydicom's YCbCr conversion
    assert decoded.shape == (source.Rows, source.Columns, 3)
    expected = heatmap_sc_pixels(source, hips)
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 4  # lossy, but the same picture


def test_caption_laterality_and_colour_scale_are_burned_in(source, hips):
    shape = (int(source.Rows), int(source.Columns))
    plain = overlay(decode_dataset(source).grey, heat_canvas(hips, shape, shape))
    annotated = annotate(plain, hips, shape)
    rows, cols = shape
    changed = np.any(annotated != plain, axis=2)
    size = rows // 28
    caption = changed[rows - 2 * size :, : cols // 3]
    assert caption.mean() > 0.2  # the caption's box and letters cover the bottom-left corner
    assert changed[: 2 * size, : cols // 8].any() and changed[: 2 * size, -cols // 8 :].any()  # R and L
    scale = annotated[rows // 3 + 5 : 2 * rows // 3 - 5, cols - 4 * size : cols - size // 2]
    assert len(np.unique(scale.reshape(-1, 3), axis=0)) > 50  # a colour gradient, not a flat box
    assert not changed[rows // 3 : 2 * rows // 3, cols // 3 : 2 * cols // 3].any()  # the image itself is untouched
    assert len(CAPTION) > 20 and "not for clinical use" in CAPTION


def test_sc_shape_keeps_the_source_resolution_or_at_least_half():
    assert sc_shape(1380, 2039) == (1380, 2039)
    assert sc_shape(5000, 6000) == (round(5000 * SC_MAX_EDGE / 6000), SC_MAX_EDGE)
    assert sc_shape(4000, 10000) == (2000, 5000)  # never below 50 %


def test_same_pixels_same_uids_other_pixels_new_uids(source, hips):
    one = result_objects(source, findings(), hips, uid_root="")[1]
    again = result_objects(source, findings(), hips, uid_root="")[1]
    assert (again.SeriesInstanceUID, again.SOPInstanceUID) == (one.SeriesInstanceUID, one.SOPInstanceUID)
    other = result_objects(source, findings(), hips[:1], uid_root="")[1]
    assert other.SeriesInstanceUID != one.SeriesInstanceUID and other.SOPInstanceUID != one.SOPInstanceUID


def test_sc_without_findings_and_with_given_uids(source, tmp_path):
    rgb = np.repeat(source.pixel_array[::4, ::4, None].astype(np.uint8), 3, axis=2)
    sc = build_heatmap_sc(source, rgb, series_instance_uid="2.25.1234", sop_instance_uid="2.25.1234.2")
    assert_valid(sc, tmp_path)
    assert (sc.SeriesInstanceUID, sc.SOPInstanceUID) == ("2.25.1234", "2.25.1234.2")
    assert "ContributingEquipmentSequence" not in sc


def test_sc_refuses_a_non_rgb_overlay(source):
    with pytest.raises(ValueError, match="RGB uint8"):
        build_heatmap_sc(
            source, np.zeros((10, 10), dtype=np.uint8), series_instance_uid="2.25.1", sop_instance_uid="2.25.1.2"
        )
