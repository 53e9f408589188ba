"""Preprocessing shared by serving and training: split an AP pelvis into hips and resize.

The published method (Study A, see ``docs/model-card.md``) splits the AP pelvis radiograph by a
vertical line into two halves, one hip each, and resizes each half to the network input. We do the
same, and in addition mirror the half on the right of the image so that every crop shows a hip in
one canonical orientation (patient midline on the crop's right side): a small model then learns one
anatomy instead of two. Training (``cds_service.training``) calls these very functions, so serving
and training cannot drift.

Laterality comes only from the header (Patient Orientation (0020,0020), DICOM PS3.3 C.7.6.1.1.1):
its first value is the patient direction of increasing column index. "L" (the usual display) puts the
patient's right hip on the image left; "R" the opposite. Anything else leaves laterality unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from cds_service.dicom.decode import DecodedImage

Laterality = Literal["R", "L"]


@dataclass(frozen=True)
class HipCrop:
    """One hip, ready for the network.

    Attributes:
        laterality: the patient's side ("R" or "L"), or None when the header does not say.
        pixels: uint8 [size, size] grey levels (the model input, before batching).
        mirrored: True when the crop was flipped left-right (the image's right half).
        box: (x0, y0, x1, y1) of the half in stored-image pixel coordinates (x1, y1 exclusive).
    """

    laterality: Laterality | None
    pixels: np.ndarray
    mirrored: bool
    box: tuple[int, int, int, int]


def resize(pixels: np.ndarray, width: int, height: int, reducing_gap: float = 2.0) -> np.ndarray:
    """Resize a uint8 grey image with antialiasing.

    PIL first shrinks by an integer factor with a box filter, as far as ``reducing_gap`` allows (the
    bilinear pass then resamples from at least that many times the target size): 2.0 for the model
    crops (what the shipped models were trained on), 1.0 for the display image (2–3× faster on a
    radiograph, the same look at display size).
    """
    image = Image.fromarray(pixels, mode="L")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=reducing_gap))


def _sides(row_direction: str | None) -> tuple[Laterality | None, Laterality | None]:
    """Patient side shown on the (image-left, image-right) halves."""
    if row_direction and row_direction.startswith("L"):
        return "R", "L"
    if row_direction and row_direction.startswith("R"):
        return "L", "R"
    return None, None


def unilateral_crop(image: DecodedImage, size: int) -> HipCrop:
    """A single-hip view (Image Laterality R or L): the whole image is one hip.

    It is mirrored when its midline lies on the image's left, as the image-right half of a pelvis is:
    a left hip in the usual display (row direction "L"), or a right hip in a flipped one.
    """
    grey = image.grey
    rows, cols = grey.shape
    laterality: Laterality = "L" if image.image_laterality == "L" else "R"
    flipped = bool(image.row_direction and image.row_direction.startswith("R"))
    mirrored = (laterality == "L") != flipped
    pixels = grey[:, ::-1] if mirrored else grey
    return HipCrop(laterality, resize(np.ascontiguousarray(pixels), size, size), mirrored, (0, 0, cols, rows))


def split_hips(image: DecodedImage, size: int) -> list[HipCrop]:
    """Split a bilateral AP pelvis into two hip crops of ``size`` × ``size`` (image-left half first).

    A single-hip view (Image Laterality R or L) gives one crop of the whole image instead.
    """
    if image.image_laterality in ("R", "L"):
        return [unilateral_crop(image, size)]
    grey = image.grey
    rows, cols = grey.shape
    middle = cols // 2
    left_side, right_side = _sides(image.row_direction)
    crops = []
    for laterality, (x0, x1), mirrored in (
        (left_side, (0, middle), False),
        (right_side, (middle, cols), True),
    ):
        half = grey[:, x0:x1]
        if mirrored:
            half = half[:, ::-1]
        crops.append(
            HipCrop(
                laterality=laterality,
                pixels=resize(np.ascontiguousarray(half), size, size),
                mirrored=mirrored,
                box=(x0, 0, x1, rows),
            )
        )
    return crops


#: Longest edge of the overlay image (PNG ≈ 0.3–0.6 MB, encoded in ≈ 30 ms; see bench/e2e.py).
DISPLAY_MAX_EDGE = 768


def display_image(image: DecodedImage, max_edge: int = DISPLAY_MAX_EDGE) -> np.ndarray:
    """A uint8 copy of the whole radiograph, at most ``max_edge`` pixels wide or high, for overlays."""
    grey = image.grey
    rows, cols = grey.shape
    scale = min(1.0, max_edge / max(rows, cols))
    if scale >= 1.0:
        return grey
    return resize(grey, max(1, round(cols * scale)), max(1, round(rows * scale)), reducing_gap=1.0)
