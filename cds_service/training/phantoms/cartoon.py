"""The version-1 renderer: a geometric 2-D AP pelvis drawn at working resolution.

Pelvic ring, acetabula, femoral heads, necks, trochanters and shafts over a soft-tissue shadow, with
exposure, positioning and noise variation: a cartoon, not anatomy (issue 27 lists what it lacks). The
shipped models up to fracture 5 / garden 5 were trained on it; :mod:`.radiograph` renders from 3-D
anatomy instead.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from cds_service.training.phantoms.filters import blur as _blur
from cds_service.training.phantoms.truth import GARDEN, HipTruth, Phantom

#: Working resolution of the drawing (rows, columns); written images are resampled to the site size.
WORK = (600, 800)


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
