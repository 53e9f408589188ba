"""Decode bounds: hostile headers are refused from the header alone, before any pixel buffer exists.

Each case names the header field a hostile or broken modality could set; the pixel data stays a
small valid buffer, so a decoder that allocated from the header (a 2^32-entry LUT for 32-bit
containers, rows × columns for a forged size) would be caught by the time limit and memory, and a
decoder that ignored the bound would answer "analysed" instead of the expected reason.
"""

from __future__ import annotations

import numpy as np
import pytest

from cds_service.dicom.decode import decode_dataset
from cds_service.errors import UnusableImageError
from tests.factory import radiograph, ramp


def test_a_plain_image_within_the_bounds_decodes():
    assert decode_dataset(radiograph(ramp())).grey.shape == (128, 256)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("BitsAllocated", 32, "Bits Allocated 32"),
        ("BitsAllocated", 64, "Bits Allocated 64"),
        ("NumberOfFrames", 3, "multi-frame"),
        ("SamplesPerPixel", 3, "sample per pixel"),
    ],
)
def test_hostile_header_is_refused_before_decoding(field: str, value: int, reason: str):
    ds = radiograph(ramp())
    setattr(ds, field, value)
    with pytest.raises(UnusableImageError, match=reason):
        decode_dataset(ds)


def test_forged_size_is_refused_before_decoding():
    ds = radiograph(ramp())
    ds.Rows = ds.Columns = 10_000  # 100 M pixels promised, 64 kB present
    with pytest.raises(UnusableImageError, match="exceeds the 60000000 pixel limit"):
        decode_dataset(ds)


def test_the_pixel_limit_is_configurable():
    ds = radiograph(ramp(rows=128, cols=256))
    with pytest.raises(UnusableImageError, match="exceeds the 30000 pixel limit"):
        decode_dataset(ds, max_pixels=30_000)
    assert decode_dataset(ds, max_pixels=128 * 256).grey.shape == (128, 256)


def test_32_bit_container_with_real_32_bit_pixels_is_refused():
    ds = radiograph(ramp())
    pixels = np.arange(128 * 256, dtype=np.uint32).reshape(128, 256)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelData = pixels.tobytes()
    with pytest.raises(UnusableImageError, match="Bits Allocated 32"):
        decode_dataset(ds)
