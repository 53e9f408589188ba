"""The version-2 renderer: an AP pelvis radiograph from 3-D anatomy through the physics of the exposure.

:func:`render` has :func:`cds_service.training.phantoms.cartoon.render`'s meaning and signature (plus
``mimics``): it draws a patient (:mod:`.patient`), an exposure's geometry and technique
(:mod:`.physics`), builds the soft tissue, the pelvis and both proximal femora with their fractures,
implants and mimics into material volumes on a grid that covers the detector's field, projects and
exposes them, and returns the image with its truth taken from the 3-D anatomy: each fracture's box
from its projected surface points, each femur's box and mask from its projected region.

Every draw from ``rng`` happens in a fixed order, whatever the labels, confounders and flags, so
``swap_marker`` and ``fracture_lines=False`` change nothing but the marker's letter and the fracture's
contrast, and a fracture on one side leaves the other side's pixels as they were but for noise.

The anatomy modules are imported when a study is rendered, so ``import cds_service.training.phantoms``
works while they are absent (and without torch or scipy).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from cds_service.training.phantoms import physics
from cds_service.training.phantoms.patient import Patient, draw_patient
from cds_service.training.phantoms.truth import HipTruth, Phantom
from cds_service.training.phantoms.volume import Grid, Materials, add, soft_step

#: Generator version of this renderer (the cartoon is version 1): phantom caches are keyed by it.
VERSION = 2
#: Voxel size (mm) of the anatomy's grid. 2 mm: ~0.6 s per study on this 2-core CPU (1.25 mm: ~1.5 s);
#: the detail below it comes from the 2-D trabecular texture and processing at detector resolution,
#: and at the 384-pixel crops the two read alike (bone edges a little softer at 2 mm).
SPACING = 2.0
#: Padding (mm, on the detector) around a fracture's projected surface points for its box.
BOX_PAD = 4.0
IMPLANT_KINDS = ("arthroplasty", "cannulated_screws", "dhs")


@dataclass
class Timings:
    """Milliseconds per stage of the last :func:`render` call that was given this object."""

    stages: dict[str, float] = field(default_factory=dict)

    def mark(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + 1000 * (now - started)
        return now


def draw_geometry(rng: np.random.Generator, patient: Patient) -> physics.Geometry:
    """Source, table and detector for this patient: SID 100–115 cm, detector 4–8 cm behind the
    posterior skin (table top and Bucky), central ray midway between the anterior superior iliac
    spines and the symphysis (about 25 mm above the femoral heads), give or take a centimetre."""
    back = body_depth(patient)[1]
    return physics.Geometry(
        sid=float(rng.uniform(1000, 1150)),
        detector_z=back + float(rng.uniform(40, 80)),
        centre=(float(rng.normal(-25, 8)), float(rng.normal(0, 6))),
    )


def body_depth(patient: Patient) -> tuple[float, float]:
    """Anterior and posterior depth (z, mm) the grid spans: the soft-tissue envelope with a margin."""
    half = 0.5 * patient.ap_thickness
    return -1.1 * half - 10, 1.1 * half + 10


def _hip_implants(rng: np.random.Generator, confounders: tuple[str, ...]) -> dict[str, str | None]:
    kind = str(rng.choice(IMPLANT_KINDS))  # always drawn: the draws after it do not depend on confounders
    return {
        "R": kind if "implant_right" in confounders else None,
        "L": kind if "implant_left" in confounders else None,
    }


def _spine_implant(grid: Grid, patient: Patient, materials: Materials) -> None:
    """Posterior fixation at L4–L5: two titanium rods with pedicle screws, above the sacrum."""
    dx, dy = patient.offset
    for side in (-1, 1):
        x = dx + side * 22 * patient.scale
        box = grid.window((-20.0, dy - 240, x - 30), (60.0, dy - 120, x + 30))
        if box is None:
            continue
        where, (z, y, xx) = box
        rod = np.hypot(z - 45, xx - x) - 3.0
        rod = np.where((y > dy - 230) & (y < dy - 130), rod, 1e3)
        density = 4.5 * soft_step(rod, grid.spacing)
        for level in (-215, -180, -145):
            screw = np.hypot(y - (dy + level), xx - (x - side * 6 * (45 - z) / 50)) - 3.2
            screw = np.where((z > 5) & (z < 50), screw, 1e3)
            density = np.maximum(density, 4.5 * soft_step(screw, grid.spacing))
        add(materials, grid, "metal", density.astype(np.float32), where)


def _ramus_fracture(
    grid: Grid, obturator_top: np.ndarray, rng: np.random.Generator, materials: Materials, draw: bool
) -> None:
    """A superior pubic ramus fracture: a 1.5 mm gap through the bone across the ramus, near the middle
    of the obturator foramen's superior border (the ramus runs along that border)."""
    centre_index = float(rng.uniform(0.3, 0.7))
    tilt = float(rng.uniform(-0.4, 0.4))
    if not draw or len(obturator_top) < 2 or "bone" not in materials:
        return
    points = np.asarray(obturator_top, np.float64)
    i = int(round(centre_index * (len(points) - 1)))
    i = min(max(i, 1), len(points) - 1)
    along = points[i] - points[i - 1]
    along /= max(np.linalg.norm(along), 1e-6)
    normal = along + tilt * np.array([0.0, 1.0, 0.0])
    normal /= np.linalg.norm(normal)
    centre = points[i]
    box = grid.window(tuple(centre - 25), tuple(centre + 25))
    if box is None:
        return
    where, (z, y, x) = box
    distance = np.abs((z - centre[0]) * normal[0] + (y - centre[1]) * normal[1] + (x - centre[2]) * normal[2])
    near = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < 22
    materials["bone"][where] *= 1 - 0.85 * soft_step(distance - 0.75, grid.spacing) * near


def _mimic_sides(mimics: tuple[str, ...], labels: dict[str, str]) -> list[tuple[str, str]]:
    """(kind, side) pairs: ``"kind:R"``/``"kind:L"`` name the side, a bare kind goes on every hip
    without a fracture (a mimic is a negative)."""
    pairs = []
    for mimic in mimics:
        kind, _, side = mimic.partition(":")
        sides = [side] if side else [s for s in ("R", "L") if labels[s] == "none"]
        pairs += [(kind, s) for s in sides]
    return pairs


def _marker(rng: np.random.Generator, shape: tuple[int, int], swap: bool) -> np.ndarray | None:
    """A lead laterality letter on the table (80 % of studies) at a random place in the upper third of
    the field, its letter random (it must not be learned); ``swap`` burns the other letter."""
    present = rng.random() < 0.8
    rows, cols = shape
    x, y = int(rng.uniform(0.05, 0.92) * cols), int(rng.uniform(0.05, 0.3) * rows)
    letter = str(rng.choice(["R", "L"]))
    size = int(rng.uniform(0.035, 0.06) * rows)
    if not present:
        return None
    letter = {"R": "L", "L": "R"}[letter] if swap else letter
    canvas = Image.new("L", (cols, rows), 0)
    ImageDraw.Draw(canvas).text((x, y), letter, fill=255, font_size=size)
    return np.asarray(canvas, np.float32) / 255.0


def _box(rows: np.ndarray, cols: np.ndarray, pad: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    return (
        max(0, int(math.floor(cols.min() - pad))),
        max(0, int(math.floor(rows.min() - pad))),
        min(shape[1], int(math.ceil(cols.max() + pad)) + 1),
        min(shape[0], int(math.ceil(rows.max() + pad)) + 1),
    )


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def render(
    rng: np.random.Generator,
    right: str,
    left: str,
    confounders: tuple[str, ...] = (),
    swap_marker: bool = False,
    fracture_lines: bool = True,
    mimics: tuple[str, ...] = (),
    *,
    spacing: float = SPACING,
    timings: Timings | None = None,
    trace: dict[str, object] | None = None,
) -> Phantom:
    """Render one AP pelvis radiograph (patient's right hip on the image left) with per-hip truth.

    ``confounders`` as :func:`cds_service.training.phantoms.cartoon.random_confounders` gives them
    (``implant_right``/``implant_left`` become an arthroplasty, cannulated screws or a DHS);
    ``mimics`` are :data:`.mimics.BONE_MIMICS` and :data:`.soft_tissue.SOFT_TISSUE_MIMICS` kinds,
    optionally ``"kind:R"``/``"kind:L"``. ``spacing`` is the anatomy's voxel size (0.75–2 mm);
    ``timings`` collects per-stage milliseconds; ``trace``, when given, receives the study's
    ``geometry``, ``grid``, ``pelvis`` and ``femurs`` truths and the ``exposure`` (counts before the log).
    """
    from cds_service.training.phantoms.femur import build_femur
    from cds_service.training.phantoms.mimics import BONE_MIMICS, add_bone_mimic
    from cds_service.training.phantoms.pelvis import build_pelvis
    from cds_service.training.phantoms.soft_tissue import SOFT_TISSUE_MIMICS, add_soft_tissue_mimic, build_soft_tissue

    clock = Timings() if timings is None else timings
    started = time.perf_counter()
    # One stream per part, spawned in a fixed order: a label, confounder or mimic on one part changes
    # how many numbers that part draws, never what the others draw.
    streams = dict(zip(("soft", "pelvis", "R", "L", "confounders", "mimics", "exposure"), rng.spawn(7), strict=True))
    patient = draw_patient(rng)
    geometry = draw_geometry(rng, patient)
    technique = physics.draw_technique(rng)
    implants = _hip_implants(rng, confounders)
    osteoarthritis = "osteoarthritis" in confounders
    grid = geometry.field_grid(spacing, body_depth(patient))
    materials: Materials = {}
    started = clock.mark("setup", started)

    build_soft_tissue(grid, patient, streams["soft"], materials)
    started = clock.mark("soft_tissue", started)
    pelvis = build_pelvis(grid, patient, streams["pelvis"], materials, osteoarthritis=osteoarthritis)
    started = clock.mark("pelvis", started)
    labels = {"R": right, "L": left}
    femurs = {}
    for side in ("R", "L"):
        femurs[side] = build_femur(
            grid,
            patient,
            side,
            pelvis.acetabulum_centre[side],
            pelvis.acetabulum_radius[side],
            labels[side],
            streams[side],
            materials,
            fracture_visible=fracture_lines,
            implant=implants[side],
            osteoarthritis=osteoarthritis,
        )
    started = clock.mark("femurs", started)
    confounding = streams["confounders"]
    ramus_side = "R" if confounding.random() < 0.5 else "L"
    fractured_ramus = "pubic_ramus_fracture" in confounders
    _ramus_fracture(grid, pelvis.obturator_top[ramus_side], confounding, materials, fractured_ramus)
    if "spine_implant" in confounders:
        _spine_implant(grid, patient, materials)
    for kind, side in _mimic_sides(mimics, labels):
        femur = femurs[side]
        if kind in BONE_MIMICS:
            add_bone_mimic(kind, grid, femur, streams["mimics"], materials)
        elif kind in SOFT_TISSUE_MIMICS:
            neck_centre, neck_axis = femur.neck_centre, femur.neck_axis
            add_soft_tissue_mimic(kind, grid, patient, neck_centre, neck_axis, streams["mimics"], materials)
        else:
            raise ValueError(f"unknown mimic {kind!r}")
    started = clock.mark("confounders", started)

    integrals = physics.project(materials, grid, geometry)
    started = clock.mark("projection", started)
    marker = _marker(streams["exposure"], geometry.shape, swap_marker)
    exposure = physics.expose(integrals, geometry, technique, streams["exposure"], marker=marker)
    started = clock.mark("exposure", started)
    if trace is not None:
        trace.update(geometry=geometry, grid=grid, pelvis=pelvis, femurs=femurs, exposure=exposure)

    hips, masks = [], []
    pad = BOX_PAD / geometry.pitch
    for side in ("R", "L"):
        femur = femurs[side]
        mask = physics.project_mask(femur.region, grid, geometry)
        box = None
        if labels[side] != "none" and femur.fracture_points is not None and len(femur.fracture_points):
            rows, cols = geometry.project_points(femur.fracture_points)
            box = _box(rows, cols, pad, geometry.shape)
        hips.append(HipTruth(side, labels[side], box, _mask_box(mask)))
        masks.append(mask)
    clock.mark("truth", started)
    return Phantom(
        image=exposure.image,
        hips=tuple(hips),
        confounders=confounders,
        noise_applied=True,
        femur_masks=tuple(masks),
    )
