"""The compressed frame's own header, read without decoding (T.81, T.87, T.800, PS3.5 Annex G)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import MPEG2MPML, ExplicitVRLittleEndian, JPEGBaseline8Bit

from cds_service.dicom.codestream import (
    FrameHeader,
    check_codestream,
    j2k_frame_header,
    jpeg_frame_header,
    rle_segment_offsets,
)
from cds_service.errors import UnusableImageError
from tests.dicom.bombs import jp2_wrapped, jpeg_2000, jpeg_baseline, jpeg_ls, rle, the_frame, with_frame
from tests.factory import radiograph, ramp


def pillow_jpeg(mode: str = "L", **options: object) -> bytes:
    """A real 64×48 JPEG from Pillow's libjpeg."""
    image = Image.fromarray(np.zeros((48, 64, 3) if mode == "RGB" else (48, 64), np.uint8), mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_jpeg_baseline_frame_header():
    assert jpeg_frame_header(pillow_jpeg()) == FrameHeader("JPEG", 48, 64, 1, 8)


def test_progressive_jpeg_frame_header_after_app_segments_and_fill_bytes():
    stream = pillow_jpeg(progressive=True)  # SOF2, after JFIF APP0, DQT and DHT segments
    comment = b"\xff\xfe" + struct.pack(">H", 6) + b"abcd"  # a COM segment, then fill bytes (T.81 §B.1.1.2)
    stream = stream[:2] + comment + b"\xff\xff\xff" + stream[2:]
    assert jpeg_frame_header(stream) == FrameHeader("JPEG", 48, 64, 1, 8)


def test_jpeg_ls_frame_header():
    assert jpeg_frame_header(the_frame(jpeg_ls())) == FrameHeader("JPEG-LS", 64, 64, 1, 16)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"\x00\x00", "does not start with SOI"),
        (b"\xff\xd8\xff\xda\x00\x02", "no frame header before its scan"),
        (b"\xff\xd8\xff\xd9", "no frame header before its scan"),
        (b"\xff\xd8\xff\xe0\x00\x10", "ends before its frame header"),
        (b"\xff\xd8\xff\xc0\x00\x0b\x08\x00", "ends before its frame header"),
        (b"\xff\xd8\xff\xe0\x00\x00\xff\xc0", "shorter than its length field"),
        (b"\xff\xd8\x12\x34", "malformed before its frame header"),
    ],
)
def test_malformed_jpeg_streams_are_refused(stream: bytes, reason: str):
    with pytest.raises(UnusableImageError, match=reason):
        jpeg_frame_header(stream)


def test_jpeg_2000_frame_header_raw_and_in_jp2():
    expected = FrameHeader("JPEG 2000", 256, 256, 1, 12)
    assert j2k_frame_header(the_frame(jpeg_2000())) == expected
    assert j2k_frame_header(the_frame(jp2_wrapped())) == expected


def test_jpeg_2000_tile_count_is_bounded():
    """1×1 tiles over 256×256: 65536 tiles, one more than Isot can number (T.800 §A.4.2)."""
    stream = bytearray(the_frame(jpeg_2000()))
    struct.pack_into(">II", stream, 4 + 2 + 2 + 16, 1, 1)  # XTsiz, YTsiz
    with pytest.raises(UnusableImageError, match="65536 tiles"):
        j2k_frame_header(bytes(stream))


def test_a_subsampled_jpeg_2000_component_is_its_decoded_size():
    stream = bytearray(the_frame(jpeg_2000()))
    struct.pack_into(">BB", stream, 4 + 38 + 1, 2, 2)  # XRsiz, YRsiz of the one component
    header = j2k_frame_header(bytes(stream))
    assert (header.rows, header.columns) == (128, 128)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"\xff\x4f\xff\x90", "does not start with SOC and SIZ"),
        (b"\xff\x4f\xff\x51\x00\x29", "SIZ segment is truncated"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x08free", "no contiguous codestream box"),
    ],
)
def test_malformed_jpeg_2000_streams_are_refused(stream: bytes, reason: str):
    with pytest.raises(UnusableImageError, match=reason):
        j2k_frame_header(stream)


def test_rle_segment_offsets():
    assert len(rle_segment_offsets(the_frame(rle()))) == 2
    with pytest.raises(UnusableImageError, match="shorter than its 64-byte header"):
        rle_segment_offsets(b"\x01\x00\x00\x00")
    with pytest.raises(UnusableImageError, match="declares 0 segments"):
        rle_segment_offsets(bytes(64))


def test_colour_jpeg_under_a_grey_header_is_refused():
    ds = with_frame(jpeg_baseline(rows=48, columns=64), pillow_jpeg("RGB"))
    with pytest.raises(UnusableImageError, match="3 components, the DICOM header 1 samples per pixel"):
        check_codestream(ds, 48, 64)


def test_jpeg_precision_above_bits_allocated_is_refused():
    stream = bytearray(pillow_jpeg())
    stream[stream.index(b"\xff\xc0") + 4] = 12  # P: a 12-bit stream in an 8-bit container
    ds = with_frame(jpeg_baseline(rows=48, columns=64), bytes(stream))
    with pytest.raises(UnusableImageError, match="12-bit samples, more than Bits Allocated 8"):
        check_codestream(ds, 48, 64)


def test_an_encapsulated_syntax_without_a_header_check_is_refused():
    ds = jpeg_baseline()
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    with pytest.raises(UnusableImageError, match="MPEG2 Main Profile / Main Level is not supported"):
        check_codestream(ds, 256, 256)


def test_native_pixel_data_has_no_codestream_to_check():
    ds = radiograph(ramp())
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    check_codestream(ds, 128, 256)


def test_malformed_encapsulation_is_refused():
    ds = jpeg_baseline()
    ds.PixelData = b"\x00" * 64
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    with pytest.raises(UnusableImageError, match="encapsulated pixel data is malformed"):
        check_codestream(ds, 256, 256)
