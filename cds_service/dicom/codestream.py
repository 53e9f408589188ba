"""Read a compressed frame's own header, without decoding it, and hold it against the DICOM header.

A codec allocates its output from the dimensions in its own stream, not from Rows (0028,0010) and
Columns (0028,0011): a JPEG whose SOF claims 30000×30000 under a 256×256 DICOM header made the decoder
allocate gigabytes before failing. PS3.5 §8.2 requires the two to agree, so a disagreement is refused
here, before any decoder runs. The headers read are:

* JPEG (ITU-T T.81 §B.2.2) and JPEG-LS (ITU-T T.87 §C.2.2, SOF55 ``FFF7``): the frame header's
  precision P, number of lines Y, samples per line X and component count Nf.
* JPEG 2000 and HTJ2K (ITU-T T.800 §A.5.1, T.814): the SIZ segment that follows SOC, from a raw
  codestream or from the ``jp2c`` box of a JP2 file (T.800 Annex I); also the tile count, which
  T.800 §A.4.2 bounds by Isot (at most 65535 tiles).
* RLE Lossless (PS3.5 Annex G): the 64-byte header's segment count and offsets.

Every message names only the codec and numbers: never patient data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import pairwise

import pydicom
from pydicom.encaps import get_frame
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14

from cds_service.errors import UnusableImageError

#: Transfer syntaxes whose frames start with a JPEG (T.81) or JPEG-LS (T.87) marker stream.
JPEG_SYNTAXES = frozenset(
    {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessP14, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless}
)
#: Transfer syntaxes whose frames are a JPEG 2000 codestream (or a JP2 file, which some encoders write).
J2K_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K})

#: T.800 §A.4.2: Isot, the tile index, is 16 bits and at most 65534.
MAX_J2K_TILES = 65535

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
#: Frame header markers: SOF0–SOF15 less DHT (C4), JPG (C8) and DAC (CC) (T.81 Table B.1), and SOF55 (T.87).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
#: Markers without a length field: TEM, RST0–RST7, SOI (T.81 §B.1.1.3).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), _SOI})
_J2K_SOC, _J2K_SIZ = b"\xff\x4f", b"\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@dataclass(frozen=True)
class FrameHeader:
    """What a compressed frame says about itself: the decoder allocates from these numbers.

    Attributes:
        codec: the stream's kind, for messages ("JPEG", "JPEG 2000").
        rows: lines in the frame (JPEG Y; JPEG 2000 Ysiz − YOsiz of the component).
        columns: samples per line (JPEG X; JPEG 2000 Xsiz − XOsiz of the component).
        samples: components (JPEG Nf; JPEG 2000 Csiz).
        precision: bits per sample, the largest over the components.
    """

    codec: str
    rows: int
    columns: int
    samples: int
    precision: int


def jpeg_frame_header(frame: bytes) -> FrameHeader:
    """The first frame header (SOFn or SOF55) of a JPEG or JPEG-LS stream, by walking its markers."""
    if frame[:2] != b"\xff\xd8":
        raise UnusableImageError("JPEG stream does not start with SOI")
    pos = 2
    while pos < len(frame):
        if frame[pos] != 0xFF:
            raise UnusableImageError("JPEG stream is malformed before its frame header")
        while pos < len(frame) and frame[pos] == 0xFF:  # fill bytes (T.81 §B.1.1.2)
            pos += 1
        if pos >= len(frame):
            break
        marker = frame[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (_SOS, _EOI):
            raise UnusableImageError("JPEG stream has no frame header before its scan")
        if pos + 2 > len(frame):
            break
        (length,) = struct.unpack_from(">H", frame, pos)
        if marker in _SOF_MARKERS:
            if length < 8 or pos + 8 > len(frame):
                break
            precision, rows, columns, samples = struct.unpack_from(">BHHB", frame, pos + 2)
            return FrameHeader("JPEG-LS" if marker == 0xF7 else "JPEG", rows, columns, samples, precision)
        if length < 2:
            raise UnusableImageError("JPEG stream has a marker segment shorter than its length field")
        pos += length
    raise UnusableImageError("JPEG stream ends before its frame header")


def _jp2_codestream(frame: bytes) -> bytes:
    """The contents of the first ``jp2c`` box of a JP2 file (T.800 §I.4, box layout §I.4 Figure I.4)."""
    pos = 0
    while pos + 8 <= len(frame):
        length, kind = struct.unpack_from(">I4s", frame, pos)
        header = 8
        if length == 1:  # XLBox: a 64-bit length follows the type
            if pos + 16 > len(frame):
                break
            (length,) = struct.unpack_from(">Q", frame, pos + 8)
            header = 16
        elif length == 0:  # the box runs to the end of the file
            length = len(frame) - pos
        if length < header:
            break
        if kind == b"jp2c":
            return frame[pos + header : pos + length]
        pos += length
    raise UnusableImageError("JP2 file has no contiguous codestream box")


def j2k_frame_header(frame: bytes) -> FrameHeader:
    """The SIZ segment of a JPEG 2000 / HTJ2K codestream (raw, or inside a JP2 file)."""
    if frame.startswith(_JP2_SIGNATURE):
        frame = _jp2_codestream(frame)
    if frame[:2] != _J2K_SOC or frame[2:4] != _J2K_SIZ:  # T.800 §A.5: SIZ immediately follows SOC
        raise UnusableImageError("JPEG 2000 codestream does not start with SOC and SIZ")
    if len(frame) < 4 + 38:
        raise UnusableImageError("JPEG 2000 SIZ segment is truncated")
    length, _, xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz, csiz = struct.unpack_from(
        ">HHIIIIIIIIH", frame, 4
    )
    if csiz < 1 or length != 38 + 3 * csiz or len(frame) < 4 + length:
        raise UnusableImageError("JPEG 2000 SIZ segment length does not match its component count")
    if not (xosiz < xsiz and yosiz < ysiz and xtsiz and ytsiz and xtosiz <= xosiz and ytosiz <= yosiz):
        raise UnusableImageError("JPEG 2000 SIZ segment has an empty image or tile grid")
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    if tiles > MAX_J2K_TILES:
        raise UnusableImageError(f"JPEG 2000 codestream has {tiles} tiles (at most {MAX_J2K_TILES})")
    sizes, precision = set(), 0
    for index in range(csiz):
        ssiz, xrsiz, yrsiz = struct.unpack_from(">BBB", frame, 4 + 38 + 3 * index)
        if not (xrsiz and yrsiz):
            raise UnusableImageError("JPEG 2000 SIZ segment has a zero component subsampling")
        # T.800 §B.2: a component spans ceil(Xsiz/XRsiz) − ceil(XOsiz/XRsiz) columns (likewise rows).
        columns = -(-xsiz // xrsiz) - -(-xosiz // xrsiz)
        rows = -(-ysiz // yrsiz) - -(-yosiz // yrsiz)
        sizes.add((rows, columns))
        precision = max(precision, (ssiz & 0x7F) + 1)
    if len(sizes) != 1:
        raise UnusableImageError("JPEG 2000 components differ in size")
    (rows, columns) = sizes.pop()
    return FrameHeader("JPEG 2000", rows, columns, csiz, precision)


def rle_segment_offsets(frame: bytes) -> list[int]:
    """The segment offsets of an RLE Lossless frame's 64-byte header (PS3.5 §G.5), checked for order."""
    if len(frame) < 64:
        raise UnusableImageError("RLE frame is shorter than its 64-byte header")
    count, *offsets = struct.unpack_from("<16I", frame)
    if not 1 <= count <= 15:
        raise UnusableImageError(f"RLE header declares {count} segments (1–15)")
    used = offsets[:count]
    if used[0] != 64 or any(a >= b for a, b in pairwise(used)) or used[-1] >= len(frame):
        raise UnusableImageError("RLE header's segment offsets are out of order or outside the frame")
    return used


def _the_frame(ds: pydicom.Dataset) -> bytes:
    try:
        return get_frame(ds.PixelData, 0, number_of_frames=1)
    except Exception as exc:  # bad item tags, lengths, offset tables: all mean "not encapsulated data"
        raise UnusableImageError(f"encapsulated pixel data is malformed ({type(exc).__name__})") from exc


def check_codestream(ds: pydicom.Dataset, rows: int, columns: int) -> None:
    """Refuse a compressed frame whose own header disagrees with the DICOM header (PS3.5 §8.2, Annex G).

    Run after the DICOM header was bounded and before any decoder: ``rows`` and ``columns`` are
    the checked Rows and Columns; Samples per Pixel (0028,0002) and Bits Allocated (0028,0100) come
    from ``ds``. Native (uncompressed) pixel data has no header of its own and passes. An
    encapsulated transfer syntax this module cannot read is refused rather than decoded unchecked.

    Raises:
        UnusableImageError: the stream is malformed or disagrees with the DICOM header.
    """
    meta = getattr(ds, "file_meta", None) or pydicom.Dataset()
    syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    if not syntax.is_transfer_syntax or not syntax.is_encapsulated:
        return  # native data, or a syntax no decoder is registered for (pydicom refuses it)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    allocated = int(ds.BitsAllocated)
    if syntax == RLELossless:
        expected = samples * -(-allocated // 8)
        found = len(rle_segment_offsets(_the_frame(ds)))
        if found != expected:
            raise UnusableImageError(
                f"RLE header declares {found} segments, the DICOM header implies {expected}"
                f" ({samples} samples × {-(-allocated // 8)} bytes)"
            )
        return
    if syntax in JPEG_SYNTAXES:
        header = jpeg_frame_header(_the_frame(ds))
    elif syntax in J2K_SYNTAXES:
        header = j2k_frame_header(_the_frame(ds))
    else:
        raise UnusableImageError(f"transfer syntax {syntax.name} is not supported")
    if (header.rows, header.columns) != (rows, columns):
        raise UnusableImageError(
            f"{header.codec} stream says {header.rows}×{header.columns} pixels, the DICOM header {rows}×{columns}"
        )
    if header.samples != samples:
        raise UnusableImageError(
            f"{header.codec} stream has {header.samples} components, the DICOM header {samples} samples per pixel"
        )
    if not 1 <= header.precision <= allocated:
        raise UnusableImageError(
            f"{header.codec} stream has {header.precision}-bit samples, more than Bits Allocated {allocated}"
        )
