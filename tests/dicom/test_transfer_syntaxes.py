"""Every transfer syntax pydicom + pylibjpeg can read decodes, and matches pydicom's own grey pipeline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEG2000Lossless, RLELossless

from cds_service.dicom.decode import decode_dataset, read_dicom
from cds_service.errors import UnusableImageError
from cds_service.training.phantoms import write_sample_study
from tests.conftest import require

PYDICOM_FILES = {
    "image_dfl.dcm": "Deflated Explicit VR Little Endian",
    "MR_small_bigendian.dcm": "Explicit VR Big Endian",
    "MR_small.dcm": "Explicit VR Little Endian",
    "MR_small_implicit.dcm": "Implicit VR Little Endian",
    "MR_small_RLE.dcm": "RLE Lossless",
    "JPEG2000.dcm": "JPEG 2000 Image Compression",
    "MR_small_jp2klossless.dcm": "JPEG 2000 Image Compression (Lossless Only)",
    "JPGExtended.dcm": "JPEG Extended (Process 2 and 4)",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS Lossless Image Compression",
}


def reference(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's own Modality + VOI LUT, min-max normalised over the used range."""
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0).astype(np.float64)
        bits, signed = ds.BitsStored, ds.PixelRepresentation == 1
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        ends = apply_voi_lut(apply_modality_lut(np.array([lo, hi]), ds), ds, index=0)
        low, high = float(min(ends)), float(max(ends))
    else:
        low, high = values.min(), values.max()
    values = (values - low) / max(high - low, 1e-12)
    return 1.0 - values if ds.PhotometricInterpretation == "MONOCHROME1" else values


@pytest.mark.parametrize(("name", "syntax"), PYDICOM_FILES.items())
def test_pydicom_test_files_decode_in_every_syntax(name, syntax):
    ds = pydicom.dcmread(get_testdata_file(name))
    assert ds.file_meta.TransferSyntaxUID.name == syntax
    ds.BodyPartExamined = "PELVIS"  # the test is about the encoding, not the anatomy
    image = decode_dataset(ds)
    assert image.pixels.shape == (ds.Rows, ds.Columns)
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    np.testing.assert_allclose(image.pixels, reference(ds), atol=0.51 / 255)  # 8-bit output


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_sample_study(tmp_path_factory.mktemp("phantom"), seed=3, site="site-c")


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_pydicom_encodings_are_identical(phantom, tmp_path, syntax):
    original = decode_dataset(read_dicom(phantom))
    ds = read_dicom(phantom)
    ds.compress(syntax)
    ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(decode_dataset(read_dicom(tmp_path / "c.dcm")).pixels, original.pixels)


@pytest.mark.parametrize(
    ("tool", "args", "lossless"),
    [
        ("dcmcjpeg", ["+e1"], True),  # JPEG lossless, first-order prediction (process 14 SV1)
        ("dcmcjpeg", ["+eb"], False),  # JPEG baseline (8-bit)
        ("dcmcjpls", ["+el"], True),  # JPEG-LS lossless
    ],
)
def test_dcmtk_jpeg_encodings_decode(phantom, tmp_path, tool, args, lossless):
    require(shutil.which(tool) is not None, f"{tool} (Debian dcmtk) is not installed")
    out = tmp_path / "jpeg.dcm"
    subprocess.run([tool, *args, str(phantom), str(out)], check=True, capture_output=True)
    original = decode_dataset(read_dicom(phantom)).pixels
    decoded = decode_dataset(read_dicom(out)).pixels
    if lossless:
        np.testing.assert_array_equal(decoded, original)
    else:
        assert np.abs(decoded - original).mean() < 0.02


def test_monochrome1_12_bit_window_and_padding(phantom):
    ds = read_dicom(phantom)
    stored = ds.pixel_array.astype(np.uint16) << 4  # 8 → 12 bits
    stored[:10, :] = 4095
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = stored.tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelPaddingValue = 4095
    image = decode_dataset(ds)
    assert (image.pixels[:10] == 0).all()  # padding is black, not inverted to white
    assert image.pixels[10:].max() > 0.9


def test_chest_radiograph_is_refused(phantom):
    ds = read_dicom(phantom)
    ds.BodyPartExamined = "CHEST"
    with pytest.raises(UnusableImageError, match="CHEST"):
        decode_dataset(ds)
