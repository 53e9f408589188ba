import numpy as np
import pydicom
import pytest

from cds_service.dicom.decode import decode_dataset
from cds_service.errors import UnusableImageError
from tests.factory import radiograph, ramp


def test_monochrome2_full_range_maps_to_zero_one():
    image = decode_dataset(radiograph(ramp()))
    assert image.pixels.dtype == np.float32
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    assert np.all(np.diff(image.pixels[0]) >= 0)  # brighter to the right, as stored
    assert image.row_direction == "L"


def test_monochrome1_is_inverted_so_bone_is_bright():
    mono2 = decode_dataset(radiograph(ramp()))
    mono1 = decode_dataset(radiograph(ramp(), photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono1.pixels, 1.0 - mono2.pixels, atol=1e-6)
    assert mono1.grey.dtype == np.uint8


def test_window_is_applied_like_pydicom():
    ds = radiograph(ramp(), WindowCenter=2048, WindowWidth=1024, RescaleSlope=1, RescaleIntercept=0)
    image = decode_dataset(ds)
    expected = pydicom.pixels.apply_voi_lut(pydicom.pixels.apply_modality_lut(ds.pixel_array, ds), ds)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(image.pixels, expected, atol=0.51 / 255)
    assert (image.pixels == 0).any() and (image.pixels == 1).any()


def test_signed_pixels_decode():
    pixels = ramp(bits=12) - 2048
    image = decode_dataset(radiograph(pixels, signed=True))
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0


def test_missing_orientation_leaves_direction_unknown():
    assert decode_dataset(radiograph(ramp(), orientation=None)).row_direction is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda ds: delattr(ds, "PixelData"), "no Pixel Data"),
        (lambda ds: setattr(ds, "PhotometricInterpretation", "RGB"), "not grey-scale"),
        (lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]), "cannot be decoded"),
    ],
)
def test_unusable_images_are_refused_with_a_reason(change, reason):
    ds = radiograph(ramp())
    change(ds)
    with pytest.raises(UnusableImageError, match=reason):
        decode_dataset(ds)


def test_tiny_images_are_refused():
    with pytest.raises(UnusableImageError, match="too small"):
        decode_dataset(radiograph(ramp(rows=16, cols=16)))
