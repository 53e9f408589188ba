"""Bounded inflation (PS3.5 §A.5) and its installation into pydicom and pynetdicom."""

from __future__ import annotations

import io
import zlib

import pydicom.filereader
import pynetdicom.dsutils
import pytest

from cds_service.dicom import inflate as inflate_module
from cds_service.dicom.inflate import InflationLimitError, inflate
from cds_service.errors import UnusableImageError
from tests.factory import radiograph, ramp


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def test_inflate_is_zlib_decompress_within_the_limit():
    data = bytes(range(256)) * 4096 + bytes(10**6)  # ~2 MB: several output chunks' worth
    assert inflate(raw_deflate(data)) == data
    assert inflate(zlib.compress(data), zlib.MAX_WBITS) == data  # a zlib-wrapped stream too


def test_the_limit_is_exact():
    data = bytes(10 * 2**20)
    assert inflate(raw_deflate(data), limit=len(data)) == data
    with pytest.raises(InflationLimitError, match=f"beyond the {len(data) - 1}-byte limit"):
        inflate(raw_deflate(data), limit=len(data) - 1)


def test_the_refusal_is_an_unusable_image_and_a_value_error():
    with pytest.raises(UnusableImageError):
        inflate(raw_deflate(bytes(1000)), limit=10)
    with pytest.raises(ValueError):
        inflate(raw_deflate(bytes(1000)), limit=10)


def test_a_corrupt_stream_raises_as_zlib_does():
    with pytest.raises(zlib.error):
        inflate(b"\xff\xff\xff\xff")


def test_install_is_idempotent_and_keeps_the_rest_of_zlib():
    inflate_module.install()
    inflate_module.install()
    assert pydicom.filereader.zlib.MAX_WBITS == zlib.MAX_WBITS
    ds = radiograph(ramp())
    encoded = pynetdicom.dsutils.encode(ds, False, True, deflated=True)  # compressobj, through the shim
    decoded = pynetdicom.dsutils.decode(io.BytesIO(encoded), False, True, deflated=True)
    assert decoded.PixelData == ds.PixelData


def test_install_applies_a_new_limit():
    small = raw_deflate(bytes(2000))
    try:
        inflate_module.install(limit=1000)
        with pytest.raises(InflationLimitError):
            pynetdicom.dsutils.decode(io.BytesIO(small), False, True, deflated=True)
    finally:
        inflate_module.install()
