"""Proximal femoral fractures as fragments: fracture surfaces split the femur, each fragment moves rigidly.

A surface is a gently curved plane in the femur frame (:mod:`.femur_frame`). A fragment is the part of
the femur on given sides of some surfaces (less the parts taken by smaller fragments), with its own
rigid :class:`~.femur_frame.Motion`. A voxel's bone is the sum over fragments of the undisplaced
femur's density at the voxel pulled back through that fragment's motion, times the fragment's
soft-edged membership there. Memberships sum to 1 when the gap is 0, so an invisible fracture
(``visible=False``) leaves no line, only what the displacement itself shows.

Types (Garden, J Bone Joint Surg Br 1961; AO/OTA classification 2018, 31-A):

* femoral neck — subcapital, transcervical or basicervical; **Garden I** incomplete valgus impaction
  (head tilted into valgus, sclerotic band of compressed trabeculae, buckle of the superior cortex, no
  dark gap); **II** complete, undisplaced, thin lucent gap; **III** complete, partly displaced (head in
  varus, distal fragment shortened and externally rotated); **IV** fully displaced (head stays aligned
  in the acetabulum, distal fragment migrates proximally and rotates externally).
* trochanteric — **31-A1** simple pertrochanteric (lateral wall intact), **A2** multifragmentary with a
  separate lesser-trochanter fragment, **A3** intertrochanteric reverse oblique or transverse; each with
  varus collapse, shortening and external rotation of the distal fragment.

The head stays in the acetabulum in every type: the proximal fragment only rotates about the head
centre; the distal fragment carries the displacement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cds_service.training.phantoms.femur_frame import Coordinates, Motion, rotation, rotation_toward
from cds_service.training.phantoms.femur_shape import FemurGeometry, bounds, signed_distance
from cds_service.training.phantoms.volume import soft_step

F = np.float32
NECK = ("garden_I", "garden_II", "garden_III", "garden_IV")
TROCHANTERIC = ("ao_A1", "ao_A2", "ao_A3")
POSITIONS = ("subcapital", "transcervical", "basicervical")


def site_of(label: str) -> str:
    """'femoral_neck', 'trochanteric' or 'none' for a label of :data:`~.truth.LABELS`."""
    return "femoral_neck" if label in NECK else "trochanteric" if label in TROCHANTERIC else "none"


@dataclass(frozen=True)
class Surface:
    """A fracture surface: ``(q − point)·normal + curvature/2·|q⊥|² = 0``; positive on the ``normal`` side."""

    point: np.ndarray
    normal: np.ndarray
    curvature: float = 0.0

    def distance(self, q: Coordinates) -> np.ndarray:
        d = [q[i] - F(self.point[i]) for i in range(3)]
        h = d[0] * F(self.normal[0]) + d[1] * F(self.normal[1]) + d[2] * F(self.normal[2])
        if self.curvature == 0:
            return h
        return h + F(0.5 * self.curvature) * (d[0] ** 2 + d[1] ** 2 + d[2] ** 2 - h**2)

    def patch(self, radius: float, step: float) -> np.ndarray:
        """Points ([N, 3]) on the surface within ``radius`` of ``point``."""
        helper = np.array([1.0, 0.0, 0.0]) if abs(self.normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        u = np.cross(self.normal, helper)
        u /= np.linalg.norm(u)
        v = np.cross(self.normal, u)
        ticks = np.arange(-radius, radius + step / 2, step)
        x, y = (m.ravel() for m in np.meshgrid(ticks, ticks))
        keep = x**2 + y**2 <= radius**2
        x, y = x[keep], y[keep]
        lift = -0.5 * self.curvature * (x**2 + y**2)
        return self.point + np.outer(x, u) + np.outer(y, v) + np.outer(lift, self.normal)


Sides = tuple[tuple[int, int], ...]  # (surface index, +1 or −1)


@dataclass(frozen=True)
class Fragment:
    """A bone fragment: where every ``sides`` entry holds, except inside each ``minus`` set; ``box``
    bounds it in the undisplaced femur frame (None: the whole femur)."""

    name: str
    sides: Sides
    motion: Motion
    minus: tuple[Sides, ...] = ()
    box: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class Fracture:
    """One fracture: surfaces, fragments (the first holds the head) and how it shows."""

    label: str
    position: str  # a POSITIONS entry for neck fractures, "pertrochanteric"/"reverse_oblique"/... else
    surfaces: tuple[Surface, ...]
    fragments: tuple[Fragment, ...]
    gap: float  # lucent gap (mm)
    band: float  # sclerotic band (g/cm³ added at the surface)
    band_width: float
    crack: tuple[np.ndarray, np.ndarray] | None = None  # incomplete: (point, direction) the line runs toward
    buckle: tuple[np.ndarray, float] | None = None  # cortical buckle (centre, radius), undisplaced frame
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def site(self) -> str:
        return site_of(self.label)

    def membership(self, index: int, q: Coordinates, edge: float, *, gap: float) -> np.ndarray | float:
        """Soft membership (0–1) of fragment ``index`` at its own undisplaced femur-frame points."""
        fragment = self.fragments[index]
        keep: np.ndarray | float = 1.0
        for surface, sign in fragment.sides:
            keep = keep * soft_step(-sign * self.surfaces[surface].distance(q) + F(gap / 2), edge)
        for group in fragment.minus:
            inside: np.ndarray | float = 1.0
            for surface, sign in group:
                inside = inside * soft_step(-sign * self.surfaces[surface].distance(q) - F(gap / 2), edge)
            keep = keep * (1 - inside)
        return keep

    def crack_weight(self, q: Coordinates) -> np.ndarray | float:
        """1 where the (possibly incomplete) fracture runs, fading to 0 where the bone is intact."""
        if self.crack is None:
            return 1.0
        point, direction = self.crack
        along = sum((q[i] - F(point[i])) * F(direction[i]) for i in range(3))
        return np.clip(F(0.5) + along / F(6.0), 0, 1)


def _neck_section(g: FemurGeometry, rng: np.random.Generator, position: str) -> tuple[Surface, float]:
    u = rng.random(4)
    t = {
        "subcapital": (0.72 + 0.12 * u[0]) * g.head_radius,
        "transcervical": (0.42 + 0.14 * u[0]) * g.neck_length,
        "basicervical": (0.68 + 0.1 * u[0]) * g.neck_length,
    }[position]
    normal = rotation(g.neck_anterior, -15 + 30 * u[1]) @ rotation(g.neck_superior, -10 + 20 * u[2]) @ g.neck_axis
    return Surface(t * g.neck_axis, normal, float(-0.012 + 0.024 * u[3])), float(t)


def _shaft_motion(g: FemurGeometry, shortening: float, external: float, medial: float = 0.0) -> Motion:
    """The distal fragment: external rotation about the shaft axis, then proximal (and medial) shift."""
    turn = Motion(rotation(g.shaft_axis, external), g.neck_point, np.zeros(3))
    return turn.then(Motion(np.eye(3), np.zeros(3), -shortening * g.shaft_axis - medial * g.lateral))


def _head_motion(g: FemurGeometry, valgus: float) -> Motion:
    """The head fragment turning about the head centre: positive valgus, negative varus."""
    return Motion(rotation_toward(g.neck_axis, g.shaft_axis, valgus), np.zeros(3), np.zeros(3))


def _head_box(g: FemurGeometry, t: float) -> tuple[np.ndarray, np.ndarray]:
    r = g.head_radius + 4 * g.scale
    end = (t + 14 * g.scale) * g.neck_axis
    high = np.maximum(np.full(3, r), end + 22 * g.scale)
    return np.array([-r, -r, -r]), high


def _neck(label: str, g: FemurGeometry, rng: np.random.Generator) -> Fracture:
    u = rng.random(6)
    position = POSITIONS[int(np.searchsorted([0.5, 0.8], u[0]))]
    if label == "garden_I":
        position = "subcapital" if u[0] < 0.7 else "transcervical"
    surface, t = _neck_section(g, rng, position)
    crack = buckle = None
    band = band_width = gap = 0.0
    extra: dict[str, float] = {}
    if label == "garden_I":
        head = _head_motion(g, 5 + 8 * u[1])
        impaction = (1.0 + 1.5 * u[2]) * g.scale
        distal = Motion(np.eye(3), np.zeros(3), -impaction * g.neck_axis)
        band, band_width = 0.3 + 0.2 * u[3], (1.5 + 1.0 * u[4]) * g.scale
        rs, _ = g.neck_radii(t)
        crack = (t * g.neck_axis - (0.35 + 0.3 * u[5]) * rs * g.neck_superior, g.neck_superior)
        buckle = (t * g.neck_axis + (rs - 0.3) * g.neck_superior, (1.8 + 0.8 * u[5]) * g.scale)
        extra = {"valgus": 5 + 8 * u[1], "impaction": impaction}
    elif label == "garden_II":
        head, distal = Motion.identity(), Motion.identity()
        gap = (0.8 + 0.7 * u[1]) * g.scale
    elif label == "garden_III":
        head = _head_motion(g, -(10 + 15 * u[1]))
        distal = _shaft_motion(g, (4 + 6 * u[2]) * g.scale, 10 + 15 * u[3])
        gap = (1.0 + 1.0 * u[4]) * g.scale
        extra = {"varus": 10 + 15 * u[1], "shortening": (4 + 6 * u[2]) * g.scale, "external": 10 + 15 * u[3]}
    else:
        head = _head_motion(g, -3 + 6 * u[1])
        shortening, external = (12 + 10 * u[2]) * g.scale, 25 + 20 * u[3]
        distal = _shaft_motion(g, shortening, external, medial=-(2 + 6 * u[4]) * g.scale)
        gap = (1.5 + 1.5 * u[5]) * g.scale
        extra = {"shortening": shortening, "external": external}
    fragments = (
        Fragment("head", ((0, -1),), head, box=_head_box(g, t)),
        Fragment("distal", ((0, 1),), distal),
    )
    return Fracture(label, position, (surface,), fragments, gap, band, band_width, crack, buckle, extra)


def _coronal_cut(g: FemurGeometry, start: np.ndarray, end: np.ndarray, tilt: float, bend: float) -> Surface:
    """A surface through the coronal line ``start``→``end``, turned ``tilt`` degrees about it; its
    normal points distally (the shaft's side is positive)."""
    along = (end - start) / np.linalg.norm(end - start)
    normal = np.cross(along, np.array([1.0, 0.0, 0.0]))
    normal = normal if normal @ g.shaft_axis > 0 else -normal
    normal = rotation(along, tilt) @ normal
    return Surface(0.5 * (start + end), normal / np.linalg.norm(normal), bend)


def _trochanteric(label: str, g: FemurGeometry, rng: np.random.Generator) -> Fracture:
    u = rng.random(12)
    s = g.scale
    medial_cortex = -g.lateral * (g.shaft_radius + 2 * s)
    lateral_cortex = g.lateral * (g.shaft_radius + 2 * s)
    if label in ("ao_A1", "ao_A2"):
        position = "pertrochanteric"
        start = g.greater[0] + g.lateral * 0.4 * g.greater[1][2] + g.shaft_axis * (2 + 8 * u[0]) * s
        end = g.shaft_point(g.lesser_level - (4 + 10 * u[1]) * s) + medial_cortex
    elif u[0] < 0.6:
        position = "reverse_oblique"
        start = g.shaft_point(g.lesser_level + (6 + 14 * u[1]) * s) + lateral_cortex
        end = g.shaft_point(g.lesser_level - (10 + 10 * u[1]) * s) + medial_cortex
    else:
        position = "transverse"
        start = g.shaft_point(g.lesser_level - (6 + 8 * u[1]) * s) + lateral_cortex
        end = start - g.lateral * 2 * (g.shaft_radius + 2 * s) + g.shaft_axis * (-3 + 6 * u[2]) * s
    surfaces = [_coronal_cut(g, start, end, -15 + 30 * u[3], -0.008 + 0.016 * u[4])]
    severe = label != "ao_A1"
    varus = (5 + 7 * u[5]) + (6 * u[6] if severe else 0)
    shortening = ((3 + 5 * u[7]) + (6 * u[8] if severe else 0)) * s
    external = (10 + 15 * u[9]) + (10 * u[10] if severe else 0)
    medial = (3 + 7 * u[11]) * s if label == "ao_A3" else 0.0
    head_box = bounds(g, float(max(start[1], end[1]) + 25 * s))
    fragments = [
        Fragment("head", ((0, -1),), _head_motion(g, -varus), box=head_box),
        Fragment("distal", ((0, 1),), _shaft_motion(g, shortening, external, medial)),
    ]
    extra = {"varus": varus, "shortening": shortening, "external": external, "medial": medial}
    if label == "ao_A2":
        v = rng.random(5)
        lesser_centre, lesser_radii = g.lesser
        base = rotation(g.shaft_axis, 25 + 20 * v[0]) @ -g.lateral  # posteromedial
        surfaces.append(Surface(lesser_centre - base * (0.2 + 0.4 * v[1]) * lesser_radii[2], base))
        below = g.shaft_point(g.lesser_level + (12 + 8 * v[2]) * s)
        surfaces.append(Surface(below, -g.shaft_axis))
        pull = Motion(rotation(g.lateral, 5 + 10 * v[3]), lesser_centre, np.zeros(3)).then(
            Motion(np.eye(3), np.zeros(3), -(4 + 6 * v[4]) * s * (g.shaft_axis + 0.5 * g.lateral))
        )
        pieces: tuple[tuple[int, int], ...] = ((0, 1), (1, 1), (2, 1))
        low, high = bounds(g, float(below[1] + 10 * s))
        fragments[1] = Fragment("distal", ((0, 1),), fragments[1].motion, minus=(pieces,))
        fragments.append(Fragment("lesser_trochanter", pieces, pull, box=(low, high)))
        extra["lesser_pull"] = (4 + 6 * v[4]) * s
    return Fracture(label, position, tuple(surfaces), tuple(fragments), (1.0 + 1.0 * u[2]) * s, 0.0, 0.0, extra=extra)


def draw_fracture(label: str, g: FemurGeometry, rng: np.random.Generator) -> Fracture | None:
    """The fracture for ``label`` (None for 'none'); draws from ``rng`` only what the label needs."""
    if label in NECK:
        return _neck(label, g, rng)
    if label in TROCHANTERIC:
        return _trochanteric(label, g, rng)
    if label != "none":
        raise ValueError(f"unknown label {label!r}")
    return None


def surface_points(fracture: Fracture, g: FemurGeometry, step: float = 1.5) -> list[tuple[np.ndarray, int, int]]:
    """Points on each fracture surface where it separates two fragments inside the bone: a list of
    (points [N, 3] undisplaced femur frame, fragment on the negative side, fragment on the positive side)."""
    out = []
    radius = 2.2 * max(g.head_radius, g.shaft_radius * 2)
    for surface in fracture.surfaces:
        points = surface.patch(radius, step * g.scale)
        q = (points[:, 0].astype(F), points[:, 1].astype(F), points[:, 2].astype(F))
        inside = signed_distance(g, q) < -0.5
        crack = fracture.crack_weight(q)
        inside &= np.broadcast_to(np.asarray(crack) > 0.5, inside.shape)
        points = points[inside]
        if not len(points):
            continue
        sides = []
        for sign in (-1, 1):
            nudged = points + sign * 0.75 * step * surface.normal
            qn = (nudged[:, 0].astype(F), nudged[:, 1].astype(F), nudged[:, 2].astype(F))
            member = np.stack(
                [
                    np.broadcast_to(fracture.membership(i, qn, 0.5, gap=0), len(points))
                    for i in range(len(fracture.fragments))
                ]
            )
            sides.append(member.argmax(0))
        split = sides[0] != sides[1]
        for neg in np.unique(sides[0][split]):
            for pos in np.unique(sides[1][split & (sides[0] == neg)]):
                chosen = split & (sides[0] == neg) & (sides[1] == pos)
                out.append((points[chosen], int(neg), int(pos)))
    return out
