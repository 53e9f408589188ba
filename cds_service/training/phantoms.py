"""Synthetic AP pelvis radiographs ("phantoms") with per-hip ground truth, written as DICOM.

No public hip radiographs are reachable here, so the shipped models learn from these. They are
geometric phantoms — pelvic ring, acetabula, femoral heads, necks, trochanters and shafts over a
soft-tissue shadow, with exposure, positioning and noise variation — not real anatomy: models
trained on them are NOT for clinical use (see docs/model-card.md).

Per hip: no fracture; femoral-neck fracture Garden I (incomplete), II (complete, undisplaced),
III (partially displaced), IV (fully displaced); trochanteric AO/OTA 31-A1/A2/A3. Confounders:
contralateral hip implant, spine implant, osteoarthritis (narrowed joint, sclerosis), pubic ramus
fracture, burned-in laterality markers at random places. Site profiles vary size, bit depth,
photometric interpretation, processing curve and lossless compression (RLE, JPEG 2000);
``external`` is never used in training. Deterministic by seed. Imports only numpy, pydicom and PIL
(the demo runs without torch).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes as sr_codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

LABELS = ("none", "garden_I", "garden_II", "garden_III", "garden_IV", "ao_A1", "ao_A2", "ao_A3")
GARDEN = {"garden_I": 0, "garden_II": 1, "garden_III": 2, "garden_IV": 3}
UID_PREFIX = "1.2.826.0.1.3680043.10.1337."  # deterministic UIDs: generate_uid(prefix, entropy)

#: Working resolution of the drawing (rows, columns); written images are resampled to the site size.
WORK = (600, 800)


@dataclass(frozen=True)
class SiteProfile:
    """How one (simulated) hospital stores its AP pelvis radiographs."""

    name: str
    columns: int
    rows: int
    bits: int
    photometric: str
    modality: str
    gamma: float
    compressed: bool
    noise: float
    transfer_syntax: str = RLELossless  # used when ``compressed``: RLE or JPEG 2000 lossless
    curve: str = "gamma"  # display/processing curve: "gamma" (x**gamma), "sigmoid" or "log"
    sharpen: float = 0.0  # unsharp-mask gain (vendor edge enhancement); 0 = none


def apply_curve(image: np.ndarray, curve: str, gamma: float) -> np.ndarray:
    """A site's processing curve on intensities in [0, 1] (output in [0, 1])."""
    if curve == "gamma":
        return image**gamma
    if curve == "sigmoid":  # film-like S-curve; ``gamma`` sets its steepness
        lo, hi = 1 / (1 + math.exp(5 * gamma * 0.5)), 1 / (1 + math.exp(-5 * gamma * 0.5))
        return (1 / (1 + np.exp(-5 * gamma * (image - 0.5))) - lo) / (hi - lo)
    if curve == "log":  # logarithmic compression of the bright end; ``gamma`` sets its strength
        return np.log1p(image * 9 * gamma) / math.log1p(9 * gamma)
    raise ValueError(f"unknown curve {curve!r}")


def draw_acquisition(base: SiteProfile, rng: np.random.Generator) -> SiteProfile:
    """One study's acquisition, drawn around its site's profile (training and internal test sets).

    Detector size ±20 % (aspect kept within ±10 %), bit depth, processing curve, curve strength and
    quantum noise vary per study, so the model cannot key on one site's look.
    """
    size = rng.uniform(0.8, 1.2)
    aspect = rng.uniform(0.9, 1.1)
    return dataclasses.replace(
        base,
        columns=int(base.columns * size),
        rows=int(base.rows * size * aspect),
        bits=int(rng.choice([8, 10, 12, 14, 16])),
        curve=str(rng.choice(["gamma", "gamma", "sigmoid", "log"])),
        gamma=base.gamma * rng.uniform(0.8, 1.25),
        noise=base.noise * rng.uniform(0.5, 1.6),
    )


SITES = {
    # After Study A's three sites (4892×4020 JPEG, 3451×2836 DICOM, 2039×1380 JPEG) …
    "site-a": SiteProfile("site-a", 4892, 4020, 12, "MONOCHROME2", "DX", 1.0, True, 0.020, JPEG2000Lossless),
    "site-b": SiteProfile("site-b", 3451, 2836, 10, "MONOCHROME1", "CR", 0.8, True, 0.030),
    "site-c": SiteProfile("site-c", 2039, 1380, 8, "MONOCHROME2", "CR", 1.25, False, 0.025),
    # … two more of our own: a DR room with a film-like S-curve, a CR reader with log compression …
    "site-d": SiteProfile("site-d", 3072, 2560, 14, "MONOCHROME2", "DX", 1.0, True, 0.025, curve="sigmoid"),
    "site-e": SiteProfile("site-e", 2370, 1770, 12, "MONOCHROME1", "CR", 1.0, True, 0.03, curve="log"),
    # … and two external sites never used in training: a 16-bit MONOCHROME1 detector with its own
    # curve, and a square detector whose vendor processing sharpens edges (unsharp mask), which no
    # training profile does.
    "external": SiteProfile("external", 3000, 2500, 16, "MONOCHROME1", "DX", 0.9, True, 0.035),
    "external-b": SiteProfile("external-b", 2048, 2048, 12, "MONOCHROME2", "DX", 1.1, True, 0.03, sharpen=1.2),
}
TRAINING_SITES = ("site-a", "site-b", "site-c", "site-d", "site-e")
EXTERNAL_SITES = ("external", "external-b")


@dataclass(frozen=True)
class HipTruth:
    """Ground truth of one hip. ``box`` is (x0, y0, x1, y1) in stored-image pixels, or None."""

    side: str  # "R" or "L" (patient side)
    label: str
    box: tuple[int, int, int, int] | None
    femur_box: tuple[int, int, int, int] | None = None  # proximal femur: head to lesser trochanter

    @property
    def fractured(self) -> bool:
        return self.label != "none"

    @property
    def garden(self) -> int | None:
        return GARDEN.get(self.label)


@dataclass(frozen=True)
class Phantom:
    """One rendered radiograph: intensity in [0, 1] (1 = bright bone) at working resolution."""

    image: np.ndarray
    hips: tuple[HipTruth, ...]  # (right, left) in work-resolution pixels
    confounders: tuple[str, ...]


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0):
    c, s = math.cos(angle), math.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = dx * c + dy * s, -dx * s + dy * c
    return (u / rx) ** 2 + (v / ry) ** 2


def _soft(d: np.ndarray, edge: float = 0.08) -> np.ndarray:
    """1 inside (d < 1), 0 outside, with a soft edge (d is an ellipse's normalised radius²)."""
    return np.clip((1.0 - d) / edge, 0.0, 1.0)


def _bone(d: np.ndarray, cortex: float = 0.25) -> np.ndarray:
    """A bone of the ellipse d: bright cortex ring, dimmer medulla."""
    inside = _soft(d, 0.05)
    ring = np.clip(1.0 - np.abs(d - 0.85) / cortex, 0.0, 1.0)
    return 0.55 * inside + 0.45 * ring * inside


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (PIL cannot blur float images)."""
    radius = max(1, int(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows).astype(np.float32)


def _segment_mask(draw_size: tuple[int, int], points: list[tuple[float, float]], width: float) -> np.ndarray:
    image = Image.new("L", (draw_size[1], draw_size[0]), 0)
    ImageDraw.Draw(image).line(points, fill=255, width=max(1, round(width)))
    return np.asarray(image, dtype=np.float32) / 255.0


def _draw_hip(
    canvas: np.ndarray,
    rng: np.random.Generator,
    sign: int,
    label: str,
    implant: bool,
    arthritis: bool,
    fracture_line: bool = True,
) -> tuple[tuple[int, int, int, int] | None, tuple[int, int, int, int]]:
    """Draw one hip; ``sign`` -1 for the image-left hip, +1 for the image-right.

    Returns the fracture box (None without a fracture) and the proximal-femur box. Without
    ``fracture_line`` the fracture's line is drawn at zero contrast (every random draw and any
    displacement unchanged): the same hip without its line, to measure how visible the line is.
    """
    rows, cols = canvas.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    scale = cols * rng.uniform(0.95, 1.05)
    cx = cols / 2 + sign * scale * rng.uniform(0.2, 0.23)
    cy = rows * rng.uniform(0.42, 0.48)
    r_head = scale * rng.uniform(0.045, 0.052)
    # Acetabulum: a bright arc above the head.
    gap = r_head * (0.10 if arthritis else rng.uniform(0.18, 0.25))
    cup = _ellipse(yy, xx, cy, cx, r_head + gap, r_head + gap)
    canvas += 0.35 * np.clip(1 - np.abs(cup - 1.0) / (0.35 if arthritis else 0.2), 0, 1) * (yy < cy + 0.2 * r_head)

    neck_angle = math.radians(rng.uniform(125, 140))  # neck-shaft angle
    # The neck runs from the head laterally and down: (neck-shaft angle − 90°) below the horizontal.
    lateral = -1 if sign < 0 else 1
    elevation = neck_angle - math.pi / 2
    axis = np.array([lateral * math.cos(elevation), math.sin(elevation)])
    neck_len = r_head * rng.uniform(1.8, 2.1)
    base = np.array([cx, cy]) + axis * neck_len
    troch = base + np.array([lateral * r_head * 0.9, r_head * 0.2])
    shaft_top = base + np.array([lateral * r_head * 0.2, r_head * 0.8])
    shaft_bottom = np.array([shaft_top[0] + lateral * r_head * 0.8, rows * 1.05])

    femur = np.zeros_like(canvas)
    width = r_head * 1.05
    femur = np.maximum(femur, 0.75 * _segment_mask(canvas.shape, [tuple(shaft_top), tuple(shaft_bottom)], width * 1.3))
    medulla = _segment_mask(canvas.shape, [tuple(shaft_top + [0, r_head]), tuple(shaft_bottom)], width * 0.55)
    femur -= 0.25 * medulla
    femur = np.maximum(femur, 0.7 * _segment_mask(canvas.shape, [(cx, cy), tuple(base)], width))
    femur = np.maximum(femur, 0.7 * _soft(_ellipse(yy, xx, troch[1], troch[0], r_head * 0.9, r_head * 0.7)))
    lesser = base + np.array([-lateral * r_head * 0.6, r_head * 1.6])
    femur = np.maximum(femur, 0.65 * _soft(_ellipse(yy, xx, lesser[1], lesser[0], r_head * 0.35, r_head * 0.3)))

    head = _bone(_ellipse(yy, xx, cy, cx, r_head, r_head))
    landmarks = np.array([[cx - r_head, cy - r_head], [cx + r_head, cy + r_head], troch, lesser + [0, r_head]])
    femur_box = _clip_box(
        (landmarks[:, 0].min(), landmarks[:, 1].min(), landmarks[:, 0].max(), landmarks[:, 1].max()), rows, cols
    )
    box = None
    if implant:
        stem = _segment_mask(canvas.shape, [(cx, cy), tuple(base), tuple(shaft_top + [0, 4 * r_head])], r_head * 0.5)
        ball = _soft(_ellipse(yy, xx, cy, cx, r_head * 0.8, r_head * 0.8), 0.02)
        canvas += femur * 0.8 + 0.2 * head
        canvas += 1.2 * np.maximum(stem, ball)
        return None, femur_box
    if label.startswith("garden"):
        stage = GARDEN[label]
        t = rng.uniform(0.35, 0.6)
        centre = np.array([cx, cy]) + axis * neck_len * t
        normal = np.array([-axis[1], axis[0]])
        half = width * (0.5 if stage == 0 else 0.75)
        # Garden I is incomplete (the line stops part-way across the neck); I and II are thin and faint.
        start = centre - normal * half * (rng.uniform(-0.4, 0.4) if stage == 0 else 1.0)
        end = centre + normal * half
        gap_width = max(1.0, r_head * rng.uniform(*((0.03, 0.05), (0.04, 0.07), (0.08, 0.12), (0.12, 0.18))[stage]))
        contrast = rng.uniform(0.35, 0.75) if stage < 2 else rng.uniform(0.6, 0.9)
        line = contrast * fracture_line * _segment_mask(canvas.shape, [tuple(start), tuple(end)], gap_width)
        if stage >= 2:  # displaced: the head fragment shifts and rotates (varus)
            shift = r_head * (0.25 if stage == 2 else 0.6) * rng.uniform(0.8, 1.2)
            dy, dx = int(round(-axis[1] * shift * 0.6)), int(round(-axis[0] * shift))
            head = np.roll(np.roll(head, dy, axis=0), dx, axis=1)
            femur_side = ((xx - centre[0]) * axis[0] + (yy - centre[1]) * axis[1]) < 0
            moved = np.roll(np.roll(femur * femur_side, dy, axis=0), dx, axis=1)
            femur = femur * ~femur_side + moved
        femur = femur * (1 - line)
        head = head * (1 - line)
        points = np.array([start, end])
        pad = r_head * 0.6
        box = (points[:, 0].min() - pad, points[:, 1].min() - pad, points[:, 0].max() + pad, points[:, 1].max() + pad)
    elif label.startswith("ao"):
        kind = label[-2:]
        a, b = (
            troch + np.array([lateral * r_head * 0.4, -r_head * 0.5]),
            lesser + np.array([-lateral * r_head * 0.2, 0]),
        )
        if kind == "A3":  # reverse obliquity: from the lateral cortex below the greater trochanter, up
            # and medially through the shaft to the medial cortex above the lesser trochanter. The line
            # breaks both cortices (it ends just outside the shaft, whose half-width is 0.65 · width): a
            # line that stopped inside them would be an intramedullary streak, not an A3 fracture.
            def shaft_at(y: float, side: float) -> np.ndarray:
                f = (y - shaft_top[1]) / (shaft_bottom[1] - shaft_top[1])
                centre = shaft_top[0] + f * (shaft_bottom[0] - shaft_top[0])
                return np.array([centre + side * lateral * width * 0.78, y])

            a, b = shaft_at(base[1] + r_head * 2.3, 1.0), shaft_at(base[1] + r_head * 1.05, -1.0)
        contrast = rng.uniform(0.35, 0.7) if kind == "A1" else rng.uniform(0.5, 0.9)  # A1: often subtle
        line = _segment_mask(canvas.shape, [tuple(a), tuple(b)], max(1.0, r_head * rng.uniform(0.04, 0.08)))
        if kind == "A2":
            mid = (a + b) / 2
            line = np.maximum(
                line, _segment_mask(canvas.shape, [tuple(mid), tuple(lesser + [0, r_head])], max(1.0, r_head * 0.05))
            )
        femur = femur * (1 - contrast * fracture_line * line)
        if kind == "A3":  # unstable: the shaft below the line is often displaced medially (a step at both cortices)
            step = int(round(-lateral * r_head * rng.uniform(0.0, 0.25)))
            distal = yy > a[1] + (xx - a[0]) * (b[1] - a[1]) / (b[0] - a[0])
            femur = femur * ~distal + np.roll(femur * distal, step, axis=1)
        pts = np.array([a, b, lesser])
        pad = r_head * 0.6
        box = (pts[:, 0].min() - pad, pts[:, 1].min() - pad, pts[:, 0].max() + pad, pts[:, 1].max() + pad)
    if arthritis:
        head = head * 1.1
    canvas += np.maximum(femur, head)
    return (None if box is None else _clip_box(box, rows, cols)), femur_box


def _clip_box(box: tuple[float, float, float, float], rows: int, cols: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (max(0, int(x0)), max(0, int(y0)), min(cols, int(x1) + 1), min(rows, int(y1) + 1))


def _rotate_box(
    box: tuple[int, int, int, int] | None, angle: float, rows: int, cols: int
) -> tuple[int, int, int, int] | None:
    """The bounding box of ``box`` after PIL's ``rotate(angle)`` about the image centre."""
    if box is None:
        return None
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64) - [cols / 2, rows / 2]
    theta = math.radians(angle)  # counter-clockwise on screen, y pointing down
    rotation = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    moved = corners @ rotation.T + [cols / 2, rows / 2]
    return _clip_box((*moved.min(0), *moved.max(0)), rows, cols)


def render(
    rng: np.random.Generator,
    right: str,
    left: str,
    confounders: tuple[str, ...] = (),
    swap_marker: bool = False,
    fracture_lines: bool = True,
) -> Phantom:
    """Draw one AP pelvis in the usual display (patient's right hip on the image left).

    ``swap_marker`` burns the other laterality letter, everything else identical (the marker test);
    ``fracture_lines=False`` draws the fracture lines at zero contrast, everything else identical (how
    visible a line is: the difference of the two images).
    """
    rows, cols = WORK
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    canvas = 0.18 * _soft(_ellipse(yy, xx, rows * 0.55, cols / 2, rows * 0.75, cols * rng.uniform(0.42, 0.5)), 0.6)
    # Pelvic ring: iliac wings, sacrum, pubic rami around the obturator foramina.
    for sign in (-1, 1):
        wing = _ellipse(yy, xx, rows * 0.22, cols / 2 + sign * cols * 0.17, rows * 0.2, cols * 0.15, sign * 0.3)
        canvas += 0.28 * _bone(wing, 0.35)
        ring = _ellipse(yy, xx, rows * 0.68, cols / 2 + sign * cols * 0.1, rows * 0.1, cols * 0.075)
        canvas += 0.3 * np.clip(1 - np.abs(ring - 1.0) / 0.45, 0, 1)
    canvas += 0.25 * _soft(_ellipse(yy, xx, rows * 0.28, cols / 2, rows * 0.17, cols * 0.07), 0.3)
    if "pubic_ramus_fracture" in confounders:
        x = cols / 2 + rng.choice([-1, 1]) * cols * 0.1
        canvas *= 1 - 0.8 * _segment_mask(canvas.shape, [(x - 8, rows * 0.6), (x + 8, rows * 0.64)], 3)
    if "spine_implant" in confounders:
        for y in (0.02, 0.1):
            canvas += 1.0 * _segment_mask(canvas.shape, [(cols / 2 - 25, rows * y), (cols / 2 + 25, rows * y)], 6)
    implant_side = "R" if "implant_right" in confounders else "L" if "implant_left" in confounders else None
    arthritis = "osteoarthritis" in confounders
    box_r, femur_r = _draw_hip(canvas, rng, -1, right, implant_side == "R", arthritis, fracture_lines)
    box_l, femur_l = _draw_hip(canvas, rng, +1, left, implant_side == "L", arthritis, fracture_lines)
    # Trabecular/overlap texture (strongest where there is bone) and bowel gas over the pelvis: line-
    # and edge-like structures that are not fractures, so a dark streak alone does not mean "fracture".
    texture = _blur(rng.normal(0, 1, canvas.shape).astype(np.float32), rng.uniform(1.5, 3.5))
    canvas *= 1 + rng.uniform(0.15, 0.35) * texture / max(float(texture.std()), 1e-6) * 0.3
    for _ in range(int(rng.integers(3, 9))):
        gy, gx = rng.uniform(0.3, 0.8) * rows, cols / 2 + rng.uniform(-0.3, 0.3) * cols
        gas = _soft(_ellipse(yy, xx, gy, gx, rng.uniform(8, 30), rng.uniform(8, 40), rng.uniform(0, 3)), 0.5)
        canvas *= 1 - rng.uniform(0.1, 0.3) * gas
    image = np.clip(canvas / rng.uniform(1.6, 1.9), 0, 1)
    # Positioning: a small rotation; exposure: offset and contrast.
    angle = rng.uniform(-3, 3)
    image = np.asarray(Image.fromarray(image.astype(np.float32), mode="F").rotate(angle, Image.Resampling.BILINEAR))
    image = _blur(image, rng.uniform(0.6, 1.4))
    image = np.clip(image * rng.uniform(0.85, 1.1) + rng.uniform(-0.05, 0.08), 0, 1)
    image = np.clip(image + rng.normal(0, rng.uniform(0.015, 0.045), image.shape).astype(np.float32), 0, 1)
    if rng.random() < 0.8:  # laterality marker burned in at a random place (must not be learned)
        marker = Image.fromarray((image * 255).astype(np.uint8))
        x, y = int(rng.uniform(20, cols - 60)), int(rng.uniform(15, rows * 0.3))
        letter = str(rng.choice(["R", "L"]))
        letter = {"R": "L", "L": "R"}[letter] if swap_marker else letter
        ImageDraw.Draw(marker).text((x, y), letter, fill=255, font_size=int(rng.uniform(20, 36)))
        image = np.maximum(image, np.asarray(marker, np.float32) / 255.0 * (np.asarray(marker) == 255))
    hips = tuple(
        HipTruth(side, label, _rotate_box(box, angle, rows, cols), _rotate_box(femur, angle, rows, cols))
        for side, label, box, femur in (("R", right, box_r, femur_r), ("L", left, box_l, femur_l))
    )
    return Phantom(image=image.astype(np.float32), hips=hips, confounders=confounders)


def random_confounders(rng: np.random.Generator, right: str, left: str) -> tuple[str, ...]:
    """Confounders the published study kept on purpose; an implant only on a non-fractured side."""
    found = []
    if rng.random() < 0.1:
        candidates = [s for s, label in (("R", right), ("L", left)) if label == "none"]
        if candidates:
            found.append(f"implant_{'right' if rng.choice(candidates) == 'R' else 'left'}")
    if rng.random() < 0.08:
        found.append("spine_implant")
    if rng.random() < 0.15:
        found.append("osteoarthritis")
    if rng.random() < 0.08:
        found.append("pubic_ramus_fracture")
    return tuple(found)


def _scale_box(box: tuple[int, int, int, int] | None, sx: float, sy: float) -> tuple[int, int, int, int] | None:
    if box is None:
        return None
    return (int(box[0] * sx), int(box[1] * sy), math.ceil(box[2] * sx), math.ceil(box[3] * sy))


def to_dataset(
    phantom: Phantom, site: SiteProfile, seed: int, index: int = 0, study_date: str = "20261120"
) -> tuple[pydicom.Dataset, tuple[HipTruth, ...]]:
    """Encode a phantom as a DICOM dataset of the site's profile; boxes are scaled to stored pixels."""
    rows, cols = phantom.image.shape
    image = np.asarray(
        Image.fromarray(phantom.image, mode="F").resize((site.columns, site.rows), Image.Resampling.BILINEAR)
    )
    rng = np.random.default_rng([seed, index, 99])
    image = np.clip(image + rng.normal(0, site.noise, image.shape).astype(np.float32), 0, 1)
    if site.sharpen:
        sigma = max(1.0, site.columns / 400)
        image = np.clip(image + site.sharpen * (image - _blur(image, sigma)), 0, 1)
    image = apply_curve(image, site.curve, site.gamma).astype(np.float32)
    if site.photometric == "MONOCHROME1":
        image = 1.0 - image
    top = (1 << site.bits) - 1
    stored = np.round(image * top).astype(np.uint8 if site.bits <= 8 else np.uint16)
    sx, sy = site.columns / cols, site.rows / rows
    hips = tuple(
        HipTruth(h.side, h.label, _scale_box(h.box, sx, sy), _scale_box(h.femur_box, sx, sy)) for h in phantom.hips
    )

    uid = lambda kind: generate_uid(UID_PREFIX, entropy_srcs=[str(seed), str(index), site.name, kind])  # noqa: E731
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = DigitalXRayImageStorageForPresentation if site.modality == "DX" else ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid("instance")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.PatientName, ds.PatientID = f"Phantom^{seed}-{index}", f"PHANTOM-{seed}-{index}"
    ds.PatientSex, ds.PatientBirthDate = "F", "19410302"
    ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = study_date, "101500", 1, 1
    ds.AccessionNumber, ds.StudyID = f"ACC{seed}{index:05d}", "1"
    ds.ReferringPhysicianName = ""  # Type 2 (General Study): present, empty when unknown
    ds.Modality, ds.Manufacturer = site.modality, f"hipcad phantom ({site.name})"
    ds.StudyDescription = "XR PELVIS AP (synthetic phantom)"
    ds.BodyPartExamined, ds.ViewPosition = "PELVIS", "AP"
    ds.PatientOrientation, ds.ImageLaterality = ["L", "F"], "B"
    spacing = 0.143 * 4892 / site.columns
    ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    if site.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        _dx_modules(ds, site, stored)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, site.photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = stored.dtype.itemsize * 8, site.bits, site.bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PixelData = stored.tobytes()
    if site.compressed:
        # pydicom's own RLE encoder; JPEG 2000 through pylibjpeg-openjpeg (a serving dependency too).
        # Lossless: the instance keeps its (deterministic) SOP Instance UID; pydicom would draw a new one.
        ds.compress(
            site.transfer_syntax,
            encoding_plugin="pydicom" if site.transfer_syntax == RLELossless else "",
            generate_instance_uid=False,
        )
    return ds, hips


def _code_item(code: Code) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _dx_modules(ds: pydicom.Dataset, site: SiteProfile, stored: np.ndarray) -> None:
    """The DX-only attributes of the Digital X-Ray Image IOD (PS3.3 A.26), For Presentation.

    Header only: the pixels are those of every other profile. The one attribute the decoder reads
    is the VOI LUT, which DX For Presentation requires (Window Center or VOI LUT Sequence, Type 1C,
    C.8.11.3): an identity LUT over the stored values that occur, which maps them exactly as the
    decoder does when an image has no VOI (the used range stretched), so decoded pixels are unchanged.
    """
    monochrome2 = site.photometric == "MONOCHROME2"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]  # C.8.11.3.1.1: Value 3 present and empty
    ds.AnatomicRegionSequence = [_code_item(sr_codes.cid4009.Pelvis)]  # General Anatomy Required, Type 2
    ds.ViewCodeSequence = [_code_item(sr_codes.cid4010.AnteroPosterior)]  # View Position AP, coded
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = []
    # Processed for display: a monotone, non-linear function of beam intensity; LOG is the nearer of
    # the two Enumerated Values. Bone (less beam intensity) is bright in MONOCHROME2: higher values.
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if monochrome2 else 1
    ds.PresentationLUTShape = "IDENTITY" if monochrome2 else "INVERSE"  # C.8.11.3.1.6
    ds.LossyImageCompression = "00"  # lossless (RLE, JPEG 2000 lossless) or none
    ds.BurnedInAnnotation = "NO"  # a laterality letter identifies neither patient nor date
    lo, hi = int(stored.min()), int(stored.max())
    entries = hi - lo + 1
    # Entries have 10–16 bits (C.8.11.3.1.5), all of them used: a narrower range (8-bit images) is
    # scaled by a power of two, which the decoder's normalisation cancels exactly.
    step = 1 << max(0, 10 - (hi - lo).bit_length())
    voi = pydicom.Dataset()
    voi.add_new(0x00283002, "US", [entries % 65536, lo, max(10, ((hi - lo) * step).bit_length())])  # 65536 entries: 0
    voi.LUTExplanation = "Stored range"
    voi.add_new(0x00283006, "OW", (np.arange(entries, dtype="<u2") * step).tobytes())  # LUT Data
    ds.VOILUTSequence = [voi]
    ds.DetectorType = ""  # Type 2: unknown for a synthetic detector
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = []


def write_sample_study(
    folder: Path, seed: int = 7, right: str = "garden_III", left: str = "none", site: str = "site-c"
) -> Path:
    """Write one bilateral AP pelvis study (one instance) into ``folder``; returns its path."""
    rng = np.random.default_rng(seed)
    phantom = render(rng, right, left)
    # Acquired "today", so the sample passes the service's look-back window whenever the demo runs.
    ds, _ = to_dataset(phantom, SITES[site], seed, study_date=date.today().strftime("%Y%m%d"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sample-{seed}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_phantom_set(folder: Path, count: int, seed: int, sites: tuple[str, ...] = TRAINING_SITES) -> Path:
    """Write ``count`` phantom studies and ``labels.csv`` (one row per hip) into ``folder``."""
    from rich.progress import track

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "side", "label", "x0", "y0", "x1", "y1", "site", "confounders"])
        for index in track(range(count), description=f"Writing {count} phantoms"):
            right, left = sample_labels(rng)
            confounders = random_confounders(rng, right, left)
            site = SITES[sites[index % len(sites)]]
            ds, hips = to_dataset(render(rng, right, left, confounders), site, seed, index)
            name = f"phantom-{seed}-{index:05d}.dcm"
            ds.save_as(folder / name, enforce_file_format=True)
            for hip in hips:
                writer.writerow(
                    [name, hip.side, hip.label, *(hip.box or ("", "", "", "")), site.name, "|".join(confounders)]
                )
    return folder / "labels.csv"


def sample_labels(rng: np.random.Generator) -> tuple[str, str]:
    """At most one fractured hip per study (as in the study's data); half the studies have one."""
    if rng.random() < 0.5:
        return "none", "none"
    label = str(rng.choice(LABELS[1:], p=[0.15, 0.15, 0.15, 0.15, 0.14, 0.13, 0.13]))
    return (label, "none") if rng.random() < 0.5 else ("none", label)
