"""Heat maps from class activation maps: normalise, place back on the radiograph, render PNG.

The networks return a raw class activation map (CAM) per class (Zhou et al. 2016); at the layer
that feeds global average pooling this equals Grad-CAM (Selvaraju et al. 2017), which the published
method used. Here each hip's map is ReLU'd, min-max normalised, upsampled to the hip's half of the
image, un-mirrored, and blended over the radiograph with a perceptual colour map.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Anchor colours of a "turbo"-like map (dark blue → cyan → green → yellow → red), interpolated to 256.
_ANCHORS = np.array(
    [
        [48, 18, 59],
        [70, 131, 250],
        [27, 229, 181],
        [164, 252, 60],
        [251, 185, 56],
        [228, 70, 10],
        [122, 4, 3],
    ],
    dtype=np.float64,
)
COLORMAP = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)],
    axis=1,
).astype(np.uint8)


@dataclass(frozen=True)
class HipHeatmap:
    """One hip's normalised map and where it lies on the stored image."""

    laterality: str | None
    cam: np.ndarray  # float32 [h, w] in [0, 1], in crop orientation
    mirrored: bool
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in stored-image pixels


def normalise_cam(cam: np.ndarray) -> np.ndarray:
    """ReLU, then min-max to [0, 1] (an all-zero map stays zero)."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


def _upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(cam.astype(np.float32), mode="F")
    return np.asarray(image.resize((max(1, width), max(1, height)), Image.Resampling.BILINEAR))


def heat_canvas(hips: Sequence[HipHeatmap], image_shape: tuple[int, int], display_shape: tuple[int, int]) -> np.ndarray:
    """Assemble the hips' maps into one float map of ``display_shape`` (rows, cols)."""
    rows, cols = image_shape
    out_rows, out_cols = display_shape
    sy, sx = out_rows / rows, out_cols / cols
    canvas = np.zeros(display_shape, dtype=np.float32)
    for hip in hips:
        x0, y0, x1, y1 = (
            round(hip.box[0] * sx),
            round(hip.box[1] * sy),
            round(hip.box[2] * sx),
            round(hip.box[3] * sy),
        )
        patch = _upsample(hip.cam, x1 - x0, y1 - y0)
        if hip.mirrored:
            patch = patch[:, ::-1]
        canvas[y0:y1, x0:x1] = np.maximum(canvas[y0:y1, x0:x1], patch[: y1 - y0, : x1 - x0])
    return canvas


def heat_levels(heat: np.ndarray) -> np.ndarray:
    """The heat map as the 256 levels every rendering colours by: uint8 ⌊255 · clip(heat, 0, 1)⌋.

    This is what an :class:`~cds_service.domain.Analysis` keeps and stores (half the bytes of
    float16, and no information the overlay, the viewer or the PACS copy could use is lost). uint8
    input is taken as levels already.
    """
    if heat.dtype == np.uint8:
        return heat
    return np.clip(np.nan_to_num(np.asarray(heat, np.float32)) * 255, 0, 255).astype(np.uint8)


def overlay(display: np.ndarray, heat: np.ndarray, opacity: float = 0.45, floor: float = 0.2) -> np.ndarray:
    """Blend ``heat`` (float [0, 1], or uint8 levels: :func:`heat_levels`) over the grey ``display``
    (uint8); RGB uint8 out.

    Values below ``floor`` are left transparent so cold areas keep the radiograph readable.
    """
    level = heat_levels(heat).astype(np.uint16)
    index = (np.asarray(display, np.uint8).astype(np.uint16) << 8) | level
    return np.take(_blend_lut(opacity, floor), index, axis=0)  # ≈ 3× faster than fancy indexing


@functools.lru_cache(maxsize=8)
def _blend_lut(opacity: float, floor: float) -> np.ndarray:
    """RGB per (grey, heat level), 65 536 × 3 bytes: one table look-up per pixel blends the overlay.

    Fixed point (1/256): grey·(1 − α) + colour·α, with α and the colour per heat level from
    :func:`_blend_tables`.
    """
    keep, tint = _blend_tables(opacity, floor)
    grey = np.arange(256, dtype=np.uint32)[:, None, None]
    lut = (grey * keep[None, :, None] + tint[None, :, :] + 128) >> 8
    return lut.astype(np.uint8).reshape(256 * 256, 3)


@functools.lru_cache(maxsize=8)
def _blend_tables(opacity: float, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per heat level (0–255): the radiograph's weight 256·(1 − α) and the colour's 256·α·colour."""
    heat = np.arange(256, dtype=np.float64) / 255
    alpha = np.where(heat >= floor, opacity * (0.5 + 0.5 * heat), 0.0)
    keep = np.round(256 * (1 - alpha)).astype(np.uint16)
    tint = np.round(256 * alpha[:, None] * COLORMAP.astype(np.float64)).astype(np.uint16)
    return keep, tint


#: Colour of the frame around each laterality label: marks it as the service's, not a burned-in marker.
LABEL_FRAME = (255, 176, 32)


def label_box(rows: int, cols: int, mirrored: bool, x0: float, x1: float) -> tuple[int, int, int, int]:
    """Where :func:`label_hips` draws a hip's label on an image of ``rows`` × ``cols`` (x0, y0, x1, y1).

    Top corner of the hip's region: the image-left one for a hip shown as is, the image-right one
    for a mirrored hip (the image-right half of a pelvis), inset from the edge.
    """
    size = max(12, min(rows, cols) // 20)
    margin = max(4, size // 3)
    width, height = round(size * 1.3), round(size * 1.35)
    left = round(x1 - margin - width) if mirrored else round(x0 + margin)
    left = min(max(0, left), max(0, cols - width))
    return left, margin, left + width, margin + height


@functools.lru_cache(maxsize=16)
def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A bold sans-serif of ``size`` px (DejaVu Sans Bold where installed, else Pillow's own font)."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def label_hips(rgb: np.ndarray, hips: Sequence[HipHeatmap], image_shape: tuple[int, int]) -> np.ndarray:
    """Write each hip's laterality ("R", "L", or "?" when the header does not say) in the top corner of its region.

    The letter is the side the service used (Patient Orientation, DICOM PS3.3 C.7.6.1.1.1: see
    :mod:`cds_service.dicom.preprocess`), white on black in an amber frame so it is not mistaken for
    a burned-in lead marker. No midline is drawn: the split between the halves is the image centre,
    not an anatomical line, and a line over the symphysis would hide what a reader looks at.
    """
    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    rows, cols = rgb.shape[:2]
    scale_x = cols / image_shape[1]
    for hip in hips:
        x0, y0, x1, y1 = label_box(rows, cols, hip.mirrored, hip.box[0] * scale_x, hip.box[2] * scale_x)
        frame = max(2, (y1 - y0) // 14)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=LABEL_FRAME)
        draw.rectangle([x0 + frame, y0 + frame, x1 - 1 - frame, y1 - 1 - frame], fill=(0, 0, 0))
        font = _label_font(y1 - y0 - 3 * frame)
        draw.text(((x0 + x1) / 2, (y0 + y1) / 2), hip.laterality or "?", fill=(255, 255, 255), font=font, anchor="mm")
    return np.asarray(image)


#: JPEG quality of the source-resolution radiograph the viewer shows (see :func:`encode_radiograph`).
RADIOGRAPH_QUALITY = 95


def encode_radiograph(grey: np.ndarray, quality: int = RADIOGRAPH_QUALITY) -> ChartImage:
    """The whole radiograph at source resolution as a grey baseline JPEG (what the result store keeps for the viewer).

    JPEG at quality 95, not PNG: the 8-bit, VOI-windowed copy of the 2039 × 1380 sample phantom is
    ≈ 1.1 MB at 42 dB PSNR and encodes in ≈ 20 ms, where a lossless PNG is ≈ 1.9 MB (quantum noise
    barely compresses) in ≈ 115 ms and the raw array 2.8 MB. The viewer is a review aid beside the
    card: the diagnostic original stays in the PACS.
    """
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="JPEG", quality=quality)
    return ChartImage(buffer.getvalue(), "image/jpeg", (int(grey.shape[1]), int(grey.shape[0])))


def decode_radiograph(image: ChartImage) -> np.ndarray:
    """The grey uint8 pixels of an :func:`encode_radiograph` image."""
    with Image.open(io.BytesIO(image.data)) as decoded:
        return np.asarray(decoded.convert("L"))


def upsample_levels(heat: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Heat levels (uint8, :func:`heat_levels`) resized to ``rows`` × ``cols`` (bilinear), as levels again."""
    levels = heat_levels(heat)
    if levels.shape == (rows, cols):
        return levels
    return heat_levels(_upsample(levels.astype(np.float32) / 255, cols, rows))


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB or grey uint8 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)  # radiograph noise barely compresses: be fast
    return buffer.getvalue()


def render_overlay_png(
    display: np.ndarray,
    hips: Sequence[HipHeatmap],
    image_shape: tuple[int, int],
    opacity: float = 0.45,
    heat: np.ndarray | None = None,
) -> bytes:
    """The whole radiograph with each hip's heat map over it and laterality labels, as PNG."""
    if heat is None:
        heat = heat_canvas(hips, image_shape, display.shape)
    return png_bytes(label_hips(overlay(display, heat, opacity), hips, image_shape))


#: The chart copy of the heat map (the one the DiagnosticReport carries): longest side and size caps.
CHART_MAX_SIDE = 1024
CHART_MAX_BYTES = 150_000


class ChartImage(NamedTuple):
    """An encoded chart-sized image: bytes, MIME type, (width, height)."""

    data: bytes
    content_type: str
    size: tuple[int, int]


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_chart_image(
    rgb: Image.Image | np.ndarray,
    max_side: int = CHART_MAX_SIDE,
    max_bytes: int = CHART_MAX_BYTES,
    quality: int = 85,
) -> ChartImage:
    """Downsize to ``max_side`` (longest side) and encode as baseline JPEG, within ``max_bytes``.

    JPEG, not PNG: a radiograph's noise makes PNG large (≈ 550 kB at 2039×1380), while JPEG at
    quality 85 keeps the overlay readable in a chart at a fraction of that. Should a noisy image
    still exceed ``max_bytes``, quality steps down (to 50), then the size, until it fits.
    """
    image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    image = image.convert("RGB")
    side = max_side
    while True:
        resized = image.resize(_fit(image.size, side), Image.Resampling.LANCZOS) if max(image.size) > side else image
        for step in (quality, *range(min(quality, 80) - 5, 49, -5)):
            buffer = io.BytesIO()
            # No optimize=True: its second (Huffman) pass doubled the encode (3.0 → 1.4 ms at 768 × 520)
            # for 3 % fewer bytes, and every new study pays it.
            resized.save(buffer, format="JPEG", quality=step)
            if buffer.tell() <= max_bytes:
                return ChartImage(buffer.getvalue(), "image/jpeg", resized.size)
        if side <= 64:
            return ChartImage(buffer.getvalue(), "image/jpeg", resized.size)
        side = round(max(resized.size) * 0.8)


def chart_image(overlay: bytes, max_side: int = CHART_MAX_SIDE, max_bytes: int = CHART_MAX_BYTES) -> ChartImage:
    """The chart copy of an already rendered overlay (PNG or JPEG bytes).

    An image already within the limits is kept as it is; a larger one is downsized and re-encoded
    (see :func:`encode_chart_image`). Raises ``PIL.UnidentifiedImageError`` for bytes that are no image.
    """
    with Image.open(io.BytesIO(overlay)) as image:
        fmt = (image.format or "").upper()
        if fmt in ("PNG", "JPEG") and max(image.size) <= max_side and len(overlay) <= max_bytes:
            return ChartImage(overlay, f"image/{fmt.lower()}", image.size)
        image.load()
        return encode_chart_image(image, max_side, max_bytes)


def render_chart_image(
    display: np.ndarray,
    heat: np.ndarray,
    hips: Sequence[HipHeatmap] = (),
    image_shape: tuple[int, int] | None = None,
    opacity: float = 0.45,
    max_side: int = CHART_MAX_SIDE,
    max_bytes: int = CHART_MAX_BYTES,
) -> ChartImage:
    """The heat map over the radiograph, chart-sized (≤ ``max_side`` px, ≤ ``max_bytes``, JPEG).

    Downsizes the grey ``display`` and the float ``heat`` first (cheaper than shrinking the full
    overlay), blends them, writes the laterality labels when ``hips`` and ``image_shape`` are given,
    and encodes with :func:`encode_chart_image`. The full-resolution view stays in the viewer.
    """
    rows, cols = display.shape
    width, height = _fit((cols, rows), max_side)
    if (width, height) != (cols, rows):
        display = np.asarray(
            Image.fromarray(np.asarray(display, np.uint8)).resize((width, height), Image.Resampling.LANCZOS)
        )
        heat = _upsample(np.asarray(heat, np.float32), width, height)
    rgb = overlay(display, heat, opacity)
    if hips and image_shape is not None:
        rgb = label_hips(rgb, hips, image_shape)
    return encode_chart_image(rgb, max_side, max_bytes)
