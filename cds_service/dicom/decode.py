"""Decode a DICOM image into display-ready grey levels.

Implements the grey-scale pipeline of DICOM PS3.4 Annex N.2 (Modality LUT → VOI LUT →
Presentation LUT) for single-frame MONOCHROME1/MONOCHROME2 images:

* Modality LUT: Rescale Slope/Intercept (0028,1053)/(0028,1052) or Modality LUT Sequence (0028,3000).
* VOI LUT: Window Center/Width (0028,1050)/(0028,1051) or VOI LUT Sequence (0028,3010);
  when neither is present the full stored range is used (the published method did not adjust windows).
* MONOCHROME1 (0028,0004) is inverted so that 1.0 is always bright (bone).

Both LUTs (and the MONOCHROME1 inversion and the 8-bit quantisation) are applied through one fused
uint8 lookup table over every possible stored value: pydicom's own ``apply_modality_lut`` and
``apply_voi_lut`` run once on that small range (so their semantics are kept exactly) and the image is
then mapped with a single indexing pass (see ``bench/decode.py`` for the speed-up).
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cds_service.dicom import inflate
from cds_service.dicom.codestream import check_codestream
from cds_service.errors import UnusableImageError

# Every dcmread in the process (DICOMweb and folder stores, the Storage SCP) inflates within bounds.
inflate.install()

#: Default largest image (rows × columns × frames) decoded; bigger ones are refused before any pixel
#: buffer is allocated (``HIPCAD_MAX_IMAGE_PIXELS`` sets it for the service).
MAX_PIXELS = 60_000_000
#: Largest pixel container: the fused LUT has 2^Bits Allocated entries (16 bits: 64 k; 32 bits: 4 G).
MAX_BITS_ALLOCATED = 16
#: Smallest usable edge: below this no hip anatomy can be resolved.
MIN_EDGE = 64


@dataclass(frozen=True)
class DecodedImage:
    """A decoded grey-scale radiograph.

    Attributes:
        grey: uint8 [rows, columns]; 255 is bright (bone), whatever the Photometric
            Interpretation was (the published method works on 8-bit images).
        row_direction: first value of Patient Orientation (0020,0020): the patient direction
            of increasing column index ("L" in the usual AP display), or None when absent.
        image_laterality: Image Laterality (0020,0062) ("R", "L", "B", "U") or None.
        sop_instance_uid: SOP Instance UID (0008,0018), the cache key.
    """

    grey: np.ndarray
    row_direction: str | None
    image_laterality: str | None
    sop_instance_uid: str

    @cached_property
    def pixels(self) -> np.ndarray:
        """float32 [rows, columns] in [0, 1] (``grey / 255``)."""
        return self.grey.astype(np.float32) / 255.0


#: Body Part Examined (0018,0015) values accepted; others (CHEST, SKULL…) are refused. Absent is accepted.
HIP_BODY_PARTS = frozenset({"PELVIS", "HIP", "HIPS", "LHIP", "RHIP", "PELVIS_HIPS", "FEMUR", "LOWER_LIMB", "LEG"})


def read_dicom(source: str | Path | bytes | BinaryIO) -> pydicom.Dataset:
    """Parse a DICOM file (path, bytes or stream); a file pydicom cannot read is an UnusableImageError."""
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        return pydicom.dcmread(stream, force=False)
    except UnusableImageError:  # a deflated data set over the inflation bound
        raise
    except Exception as exc:  # InvalidDicomError, EOFError, struct errors…: all mean "unreadable"
        raise UnusableImageError(f"not a readable DICOM file ({type(exc).__name__})") from exc


def _padding_mask(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Pixels marked as padding (Pixel Padding Value / Range Limit, PS3.3 C.7.5.1.1.2), or None."""
    value = ds.get("PixelPaddingValue")
    if value is None or isinstance(value, bytes):
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None or isinstance(limit, bytes):
        mask = stored == int(value)
    else:
        lo, hi = sorted((int(value), int(limit)))
        mask = (stored >= lo) & (stored <= hi)
    return mask if mask.any() else None


def _fused_lut(ds: pydicom.Dataset, stored: np.ndarray, padding: np.ndarray | None, invert: bool) -> np.ndarray:
    """One uint8 table indexed by the stored values' bit pattern: Modality LUT → VOI LUT → [0, 255].

    The table covers every value the container can hold (2^Bits Allocated entries, signed values by
    their unsigned bit pattern), so no index arithmetic or clipping is needed on the image itself.
    """
    bits = int(ds.BitsStored)
    if not 1 <= bits <= 16:
        raise UnusableImageError(f"Bits Stored {bits} is not supported (1–16)")
    unsigned = stored.dtype.newbyteorder("=").str.replace("i", "u")
    patterns = np.arange(1 << (8 * stored.dtype.itemsize), dtype=np.uint64).astype(unsigned)
    domain = patterns.view(stored.dtype.newbyteorder("="))
    values = apply_modality_lut(domain, ds)
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    if has_voi:
        if ds.get("VOILUTSequence") and np.array_equal(values, np.round(values)):
            # A VOI LUT indexes by integer; pydicom warns (and logs) on every float input, though
            # integral floats (Rescale Slope 1, integer intercept) index exactly as their integers.
            values = values.astype(np.int64)
        values = apply_voi_lut(values, ds, index=0)
    values = np.asarray(values, dtype=np.float64)
    if has_voi:
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        in_range = values[(domain >= lo) & (domain <= hi)]
        vmin, vmax = float(in_range.min()), float(in_range.max())
    else:
        # Without a VOI the stored range that actually occurs is stretched, not the theoretical one.
        real = stored[~padding] if padding is not None else stored
        if real.size == 0:
            raise UnusableImageError("every pixel is padding")
        used = np.asarray(apply_modality_lut(np.array([real.min(), real.max()]), ds), np.float64)
        vmin, vmax = float(used.min()), float(used.max())
    scale = 255.0 / (vmax - vmin) if vmax > vmin else 0.0
    grey = np.clip((values - vmin) * scale, 0.0, 255.0)
    if invert:
        grey = 255.0 - grey
    return (grey + 0.5).astype(np.uint8)


_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lut")


def _apply_lut(lut: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``lut[index]`` in two row bands on two threads (numpy releases the GIL): ~2× on big images."""
    grey = np.empty(index.shape, dtype=np.uint8)
    middle = index.shape[0] // 2
    bands = [slice(0, middle), slice(middle, None)]
    for future in [_POOL.submit(np.take, lut, index[band], None, grey[band]) for band in bands]:
        future.result()
    return grey


def decode_dataset(ds: pydicom.Dataset, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode a single-frame grey-scale DICOM image (any transfer syntax pydicom can read).

    Every bound (pixel count, bits allocated, frames, samples per pixel) is checked on the header,
    and a compressed frame's own header (JPEG SOF, JPEG 2000 SIZ, RLE segments) against it
    (:func:`cds_service.dicom.codestream.check_codestream`), before the pixel data is decoded: a
    hostile header or codestream cannot make the service allocate gigabytes. The service calls it in
    a memory- and time-limited worker process (:func:`cds_service.dicom.worker.decode_in_worker`), so
    an image that agrees with its header and is still expensive costs that worker, not the service.

    Raises:
        UnusableImageError: not an image, colour, multi-frame, another body part, too small or too
            large, or the pixel data or header cannot be decoded. The message never contains patient data.
    """
    try:
        return _decode(ds, max_pixels)
    except UnusableImageError:
        raise
    except Exception as exc:  # a malformed header value can fail anywhere: never crash the hook
        raise UnusableImageError(f"malformed image header or pixel data ({type(exc).__name__})") from exc


def _check_header(ds: pydicom.Dataset, max_pixels: int) -> tuple[int, int]:
    """Rows and columns, once the header promises a decodable, bounded single grey-scale frame."""
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        raise UnusableImageError("more than one sample per pixel: a grey-scale radiograph is expected")
    allocated = int(getattr(ds, "BitsAllocated", 0) or 0)
    if not 1 <= allocated <= MAX_BITS_ALLOCATED:
        raise UnusableImageError(f"Bits Allocated {allocated} is not supported (1–{MAX_BITS_ALLOCATED})")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnusableImageError("multi-frame image: a single radiograph is expected")
    rows, cols = int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))
    if rows * cols * frames > max_pixels:
        raise UnusableImageError(f"image of {rows}×{cols} pixels exceeds the {max_pixels} pixel limit")
    if min(rows, cols) < MIN_EDGE:
        raise UnusableImageError(f"image of {rows}×{cols} pixels is too small")
    return rows, cols


def _decode(ds: pydicom.Dataset, max_pixels: int) -> DecodedImage:
    if "PixelData" not in ds:
        raise UnusableImageError("no Pixel Data (0x7FE0,0010): not an image object")
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnusableImageError(f"Photometric Interpretation {photometric[:16] or 'absent'} is not grey-scale")
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part and body_part not in HIP_BODY_PARTS:
        raise UnusableImageError(f"Body Part Examined is {body_part[:16]}, not the hip or pelvis")
    rows, cols = _check_header(ds, max_pixels)
    check_codestream(ds, rows, cols)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt or unsupported pixel data
        raise UnusableImageError(f"pixel data cannot be decoded ({type(exc).__name__})") from exc
    if stored.ndim != 2 or stored.shape != (rows, cols):
        raise UnusableImageError("decoded pixel data does not match Rows × Columns")
    if not np.issubdtype(stored.dtype, np.integer):
        raise UnusableImageError("floating-point pixel data is not supported")

    padding = _padding_mask(ds, stored)
    lut = _fused_lut(ds, stored, padding, invert=photometric == "MONOCHROME1")
    native = stored.astype(stored.dtype.newbyteorder("="), copy=False)
    grey = _apply_lut(lut, native.view(native.dtype.str.replace("i", "u")))
    if padding is not None:
        grey[padding] = 0  # padding is background: black, whatever the photometric interpretation

    orientation = getattr(ds, "PatientOrientation", None)
    row_direction = None
    if orientation and len(orientation) >= 1 and str(orientation[0]).strip():
        row_direction = str(orientation[0]).strip().upper()
    laterality = str(getattr(ds, "ImageLaterality", "") or "").strip().upper() or None
    return DecodedImage(
        grey=grey,
        row_direction=row_direction,
        image_laterality=laterality,
        sop_instance_uid=str(getattr(ds, "SOPInstanceUID", "")),
    )
