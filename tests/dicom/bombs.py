"""Hostile DICOM images built from real encoders' output, then patched (decode bombs).

Each builder encodes a small, valid image with a real codec (Pillow's libjpeg, OpenJPEG through
pydicom's ``compress``, pydicom's RLE encoder, CharLS-encoded pydicom test data, zlib) and, when
asked, patches only the stream's own header, so the DICOM header still says a small image while the
codec is told to allocate 30000×30000 samples.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, get_frame
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from tests.factory import radiograph, ramp

#: What the patched streams claim: 900 M samples (the issue's bomb: 4.3 GB and 26 s in libjpeg).
BOMB_EDGE = 30000


def with_frame(ds: pydicom.Dataset, frame: bytes) -> pydicom.Dataset:
    """``ds`` with its single encapsulated frame replaced by ``frame``."""
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


def the_frame(ds: pydicom.Dataset) -> bytes:
    """The single encapsulated frame of ``ds``."""
    return get_frame(ds.PixelData, 0, number_of_frames=1)


def patch_sof(frame: bytes, marker: bytes, rows: int = BOMB_EDGE, columns: int = BOMB_EDGE) -> bytes:
    """The JPEG / JPEG-LS stream with its frame header's Y and X replaced (T.81 §B.2.2)."""
    patched = bytearray(frame)
    at = patched.index(marker)
    struct.pack_into(">HH", patched, at + 5, rows, columns)
    return bytes(patched)


def jpeg_baseline(bomb: bool = False, rows: int = 256, columns: int = 256) -> pydicom.Dataset:
    """An 8-bit ramp encoded by Pillow (libjpeg, baseline SOF0), its SOF optionally claiming 30000²."""
    pixels = ramp(rows=rows, cols=columns, bits=8).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "JPEG", quality=95)
    ds = radiograph(pixels, bits_stored=8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    frame = buffer.getvalue()
    return with_frame(ds, patch_sof(frame, b"\xff\xc0") if bomb else frame)


def jpeg_ls(bomb: bool = False) -> pydicom.Dataset:
    """pydicom's CharLS-encoded JPEG-LS lossless MR (64×64, 16 bits), its SOF55 optionally claiming 30000²."""
    ds = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    ds.BodyPartExamined = "PELVIS"
    return with_frame(ds, patch_sof(the_frame(ds), b"\xff\xf7")) if bomb else ds


def patch_siz(codestream: bytes, rows: int = BOMB_EDGE, columns: int = BOMB_EDGE) -> bytes:
    """The JPEG 2000 codestream with its SIZ's Xsiz and Ysiz replaced (T.800 §A.5.1)."""
    patched = bytearray(codestream)
    at = patched.index(b"\xff\x51")
    struct.pack_into(">II", patched, at + 6, columns, rows)
    return bytes(patched)


def jpeg_2000(bomb: bool = False) -> pydicom.Dataset:
    """A 12-bit ramp encoded by OpenJPEG (pydicom ``compress``), its SIZ optionally claiming 30000²."""
    ds = radiograph(ramp(rows=256, cols=256))
    ds.compress(JPEG2000Lossless)
    return with_frame(ds, patch_siz(the_frame(ds))) if bomb else ds


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def jp2_wrapped(bomb: bool = False) -> pydicom.Dataset:
    """:func:`jpeg_2000`'s codestream inside a JP2 file (T.800 Annex I), as some encoders write it."""
    ds = jpeg_2000()
    codestream = the_frame(ds)
    if bomb:
        codestream = patch_siz(codestream)
    ihdr = struct.pack(">IIHBBBB", ds.Rows, ds.Columns, 1, ds.BitsStored - 1, 7, 0, 0)
    colr = struct.pack(">BBBI", 1, 0, 0, 17)  # enumerated colour space 17: greyscale
    jp2 = (
        _box(b"jP  ", b"\r\n\x87\n")
        + _box(b"ftyp", b"jp2 " + struct.pack(">I", 0) + b"jp2 ")
        + _box(b"jp2h", _box(b"ihdr", ihdr) + _box(b"colr", colr))
        + _box(b"jp2c", codestream)
    )
    return with_frame(ds, jp2)


def rle(segments: int | None = None, second_offset: int | None = None) -> pydicom.Dataset:
    """A 12-bit ramp encoded by pydicom's RLE encoder (2 segments: high and low bytes, PS3.5 §G.2).

    ``segments`` rewrites the header's segment count; ``second_offset`` the second segment's offset.
    """
    ds = radiograph(ramp(rows=128, cols=256))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    if segments is None and second_offset is None:
        return ds
    frame = bytearray(the_frame(ds))
    if segments is not None:
        struct.pack_into("<I", frame, 0, segments)
    if second_offset is not None:
        struct.pack_into("<I", frame, 8, second_offset)
    return with_frame(ds, bytes(frame))


def write_deflated(path: Path, rows: int, columns: int, pixels: bytes | None = None) -> pydicom.Dataset:
    """A Deflated Explicit VR Little Endian file (PS3.5 §A.5) of a ``rows``×``columns`` 16-bit image.

    ``pixels`` None writes zeros, streamed through the compressor 1 MiB at a time: 8192×16384
    (256 MiB inflated) is a ~260 kB file, built without ever holding the inflated bytes.
    Returns the data set written, less its Pixel Data (its UIDs, without inflating the file).
    """
    ds = radiograph(ramp(rows=128, cols=256))
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    size = rows * columns * 2
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [compressor.compress(body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size))]
    if pixels is not None:
        parts.append(compressor.compress(pixels))
    else:
        zeros = bytes(2**20)
        for start in range(0, size, len(zeros)):
            parts.append(compressor.compress(zeros[: min(len(zeros), size - start)]))
    parts.append(compressor.flush())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    path.write_bytes(head.getvalue() + b"".join(parts))
    return ds
