"""The heat-map overlay as a DICOM Secondary Capture image (highdicom), for any PACS viewer.

What the pixels carry (Burned In Annotation YES, PS3.3 C.7.6.1.1.7): the radiograph with the heat
map blended in, each hip's laterality ("R", "L"), a colour scale of the heat map, and the caption
:data:`CAPTION`, all drawn by :func:`annotate`. Resolution: the source's own (rows and columns as
stored), unless its longest edge exceeds :data:`SC_MAX_EDGE`; then it is scaled to that edge, never
below half the source's (:func:`sc_shape`).

Encoding: JPEG baseline (PS3.5 Section 8.2.1, transfer syntax 1.2.840.10008.1.2.4.50) by Pillow at
quality :data:`JPEG_QUALITY`, 4:2:2 chroma subsampling, so Photometric Interpretation YBR_FULL_422
states what the stream holds, with Lossy Image Compression "01", its ratio and method (PS3.3
C.7.6.1.1.5). The object is in the source's study, a new series, referencing the source image
(Source Image Sequence, purpose "Source image for image processing operation"), with the models as
Contributing Equipment (IHE AIR).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import JPEGBaseline8Bit

from cds_service.dicom import codes
from cds_service.dicom.sr import DEVICE_NAME, MANUFACTURER, add_result_context, series_description
from cds_service.domain import StudyFindings
from cds_service.explain.heatmap import HipHeatmap, overlay

SC_SERIES_NUMBER = 902
#: Burned into every SC. Pillow's built-in font has no em dash, hence the hyphen.
CAPTION = "AI result - not for clinical use"
#: Longest edge of the SC, pixels; larger sources are scaled down to it, but never below half size.
SC_MAX_EDGE = 4096
JPEG_QUALITY = 90


def sc_shape(rows: int, columns: int, max_edge: int = SC_MAX_EDGE) -> tuple[int, int]:
    """(rows, columns) of the SC of a ``rows`` × ``columns`` source: the same, or scaled to ``max_edge`` (≥ 50 %)."""
    scale = max(0.5, min(1.0, max_edge / max(rows, columns)))
    return max(1, round(rows * scale)), max(1, round(columns * scale))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int) -> tuple[int, int, int, int]:
    """White ``text`` on a black box with its top-left corner at ``xy``; the box drawn."""
    font = _font(size)
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    pad = max(2, size // 5)
    box = (int(left - pad), int(top - pad), int(right + pad), int(bottom + pad))
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text(xy, text, fill=(255, 255, 255), font=font)
    return box


def annotate(rgb: np.ndarray, hips: Sequence[HipHeatmap], image_shape: tuple[int, int]) -> np.ndarray:
    """Burn into ``rgb`` (the overlay, RGB uint8) each hip's laterality, a colour scale and :data:`CAPTION`.

    ``hips`` boxes are in pixels of the stored image of ``image_shape`` (rows, columns).
    """
    rows, cols = rgb.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(image)
    size = max(12, rows // 28)
    margin = size // 2
    scale_x = cols / image_shape[1]
    for hip in hips:  # the side's letter at the top of the hip's half, inside its outer edge
        text = hip.laterality or "?"
        width = draw.textlength(text, font=_font(size))
        x = hip.box[2] * scale_x - width - margin if hip.mirrored else hip.box[0] * scale_x + margin
        _label(draw, (x, margin), text, size)
    _label(draw, (margin, rows - margin - size * 1.2), CAPTION, size)
    _colour_scale(image, draw, size)
    return np.asarray(image)


def _colour_scale(image: Image.Image, draw: ImageDraw.ImageDraw, size: int) -> None:
    """The heat map's colours from high (top) to low (bottom), blended over mid-grey as on the image."""
    rows, cols = image.height, image.width
    height, width = max(32, rows // 3), max(8, size)
    label = max(10, size // 2)
    x0, y0 = cols - width - label * 5, (rows - height) // 2
    heat = np.repeat(np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None], width, axis=1)
    bar = overlay(np.full((height, width), 128, np.uint8), heat)
    draw.rectangle((x0 - label, y0 - label * 3, cols - 1, y0 + height + label), fill=(0, 0, 0))
    image.paste(Image.fromarray(bar), (x0, y0))
    font = _font(label)
    draw.text((x0, y0 - label * 2), "AI heat", fill=(255, 255, 255), font=font)
    draw.text((x0 + width + label // 2, y0), "high", fill=(255, 255, 255), font=font)
    draw.text((x0 + width + label // 2, y0 + height - label), "low", fill=(255, 255, 255), font=font)


def _code_item(code: pydicom.sr.coding.Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def jpeg_baseline(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """One JPEG baseline (ISO/IEC 10918-1) frame of ``rgb``, YCbCr 4:2:2 (YBR_FULL_422)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG", quality=quality, subsampling="4:2:2")
    return buffer.getvalue()


def _compress(sc: Dataset, rgb: np.ndarray) -> None:
    """Replace the native RGB Pixel Data with one encapsulated JPEG baseline frame."""
    frame = jpeg_baseline(rgb)
    sc.PixelData = encapsulate([frame])
    sc["PixelData"].VR = "OB"
    sc["PixelData"].is_undefined_length = True
    sc.PhotometricInterpretation = "YBR_FULL_422"
    sc.LossyImageCompression = "01"
    sc.LossyImageCompressionRatio = f"{rgb.nbytes / len(frame):.2f}"[:16]
    sc.LossyImageCompressionMethod = "ISO_10918_1"
    sc.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def build_heatmap_sc(
    source: pydicom.Dataset,
    annotated_rgb: np.ndarray,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    findings: StudyFindings | None = None,
    uid_root: str = "",
    created: datetime | None = None,
) -> hd.sc.SCImage:
    """A JPEG-compressed Secondary Capture of ``annotated_rgb`` ([rows, cols, 3] uint8: the overlay
    after :func:`annotate`) derived from ``source``.

    ``findings`` (optional) adds the models as Contributing Equipment (Device UIDs under
    ``uid_root``) and the not-for-clinical-use wording to the Series Description; ``created``
    (default now) is the Series Date/Time and Contribution DateTime.
    """
    pixels = np.ascontiguousarray(annotated_rgb)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"overlay must be RGB uint8 [rows, cols, 3], got {pixels.dtype} {pixels.shape}")
    created = created or datetime.now().astimezone()
    orientation = source.get("PatientOrientation")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_instance_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=tuple(orientation) if orientation and len(orientation) == 2 else ("L", "F"),
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    _compress(sc, pixels)
    sc.BurnedInAnnotation = "YES"
    if "BodyPartExamined" in source:  # PELVIS: unpaired, so the Type 2C Laterality stays absent
        sc.BodyPartExamined = source.BodyPartExamined
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "AI heat map (class activation map) blended over the radiograph, JPEG lossy"
    sc.DerivationCodeSequence = DicomSequence([_code_item(codes.VISUAL_EXPLANATION)])
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = DicomSequence([_code_item(codes.SOURCE_IMAGE_FOR_PROCESSING)])
    sc.SourceImageSequence = DicomSequence([reference])
    sc.ManufacturerModelName = DEVICE_NAME
    sc.ContentDate, sc.ContentTime = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    if findings is not None:
        sc.SeriesDescription = series_description(findings, "heat map")
        sc.SoftwareVersions = [m.label[:64] for m in (findings.fracture_model, findings.garden_model)]
        add_result_context(sc, findings, set(), created, uid_root)
    else:
        sc.SeriesDescription = "AI hip fracture heat map (hipcad)"
        if "ContributingEquipmentSequence" in sc:  # the source's equipment did not make this image
            del sc.ContributingEquipmentSequence
        sc.SeriesDate, sc.SeriesTime = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    return sc
