"""Hip implants as metal (titanium 4.5, stainless steel 7.9 or cobalt-chromium 8.3 g/cm³) in the femur frame.

* ``arthroplasty`` — total hip replacement: the native head and neck resected at a neck osteotomy, a
  femoral stem down the medullary canal with its neck and modular head (28/32/36 mm) at the head
  centre, and a hemispherical cup shell in the acetabulum (inclination 35–50°, anteversion 10–25°).
* ``cannulated_screws`` — three parallel cannulated, partially threaded 7 mm screws along the neck in an
  inverted triangle, from the lateral cortex to 5 mm under the head's surface.
* ``dhs`` — dynamic hip screw: a lag screw along the neck axis into the head (tip–apex distance < 25 mm),
  its barrel through the lateral cortex, a side plate on the lateral shaft and 4 cortical screws.

Implants go only on a hip without a current fracture (as in the source study: an implant only on a
non-fractured side).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cds_service.training.phantoms.femur_frame import Coordinates, Motion, Pose
from cds_service.training.phantoms.femur_shape import FemurGeometry
from cds_service.training.phantoms.fractures import Fracture, Fragment, Surface
from cds_service.training.phantoms.volume import DENSITY, Grid, Materials, add, soft_step

F = np.float32
IMPLANTS = ("arthroplasty", "cannulated_screws", "dhs")
STEEL = 7.9


@dataclass(frozen=True)
class ImplantPlan:
    """One drawn implant: its kind, metals and sizes (mm, degrees, g/cm³)."""

    kind: str
    stem_density: float
    head_density: float
    head_radius: float
    resection: float  # arthroplasty: osteotomy at this distance from the head centre along the neck
    length: float  # stem length / plate length
    cup: tuple[float, float, float]  # outer radius, inclination, anteversion
    spread: float  # screws: distance of each screw from the neck axis, as a share of the neck radius


def draw_implant(kind: str, g: FemurGeometry, acetabulum_radius: float, rng: np.random.Generator) -> ImplantPlan:
    """Draw an implant of ``kind`` (one of :data:`IMPLANTS`); always 8 draws."""
    if kind not in IMPLANTS:
        raise ValueError(f"unknown implant {kind!r}")
    u = rng.random(8)
    metal = DENSITY["titanium"] if u[0] < 0.5 else DENSITY["cocr"] if kind == "arthroplasty" else STEEL
    return ImplantPlan(
        kind=kind,
        stem_density=metal,
        head_density=DENSITY["cocr"] if u[1] < 0.7 else 3.98,  # CoCr or alumina ceramic
        head_radius=(14.0, 16.0, 18.0)[int(u[2] * 3)],
        resection=(0.72 + 0.1 * u[3]) * g.neck_length,
        length=(110 + 40 * u[4]) * g.scale if kind == "arthroplasty" else (70 + 40 * u[4]) * g.scale,
        cup=(float(acetabulum_radius) + 1 + 2 * u[5], 35 + 15 * u[6], 10 + 15 * u[7]),
        spread=0.5 + 0.1 * u[5],
    )


def resected(plan: ImplantPlan, g: FemurGeometry) -> Fracture:
    """The bone left after a hip replacement's neck osteotomy: one fragment, the head discarded."""
    surface = Surface(plan.resection * g.neck_axis, g.neck_axis)
    return Fracture("none", "resected", (surface,), (Fragment("distal", ((0, 1),), Motion.identity()),), 0, 0, 0)


def _capsule(
    q: Coordinates, start: np.ndarray, end: np.ndarray, radius: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to a rod ``start``→``end`` of ``radius``, and the position along it (0–1)."""
    axis = end - start
    d = [q[i] - F(start[i]) for i in range(3)]
    t = np.clip((d[0] * F(axis[0]) + d[1] * F(axis[1]) + d[2] * F(axis[2])) / F(axis @ axis), 0, 1)
    dist = np.sqrt(sum((d[i] - t * F(axis[i])) ** 2 for i in range(3)))
    return dist - radius, t


def _stem(plan: ImplantPlan, g: FemurGeometry, q: Coordinates) -> np.ndarray:
    """Signed distance to the femoral stem (neck + tapered body down the canal)."""
    top = g.shaft_point(-6 * g.scale)
    tip = g.shaft_point(plan.length)
    body, t = _capsule(q, top, tip, 0.0)
    body = body - (F(9.5 * g.scale) - F(4.0 * g.scale) * t)
    neck, _ = _capsule(q, np.zeros(3), (plan.resection + 4) * g.neck_axis, 6.0)
    shoulder, _ = _capsule(q, (plan.resection - 2) * g.neck_axis, g.shaft_point(30 * g.scale), 8.5 * g.scale)
    k = F(6.0)
    d = np.minimum(body, shoulder)
    h = np.clip(F(0.5) + (d - neck) / (2 * k), 0, 1)
    return d + (neck - d) * h - k * h * (1 - h)


def stem_void(plan: ImplantPlan | None, g: FemurGeometry) -> Callable[[Coordinates], np.ndarray] | None:
    """Bone taken out by the stem's broach (multiply the bone by this), or None."""
    if plan is None or plan.kind != "arthroplasty":
        return None
    return lambda q: 1 - soft_step(_stem(plan, g, q), 1.0)


def _screw_lines(plan: ImplantPlan, g: FemurGeometry) -> list[tuple[np.ndarray, np.ndarray]]:
    """(entry at the lateral cortex, tip in the head) of each screw."""
    rs, ra = g.neck_radii(0.5 * g.neck_length)
    if plan.kind == "dhs":
        offsets = [-0.15 * rs * g.neck_superior]
        depth = g.head_radius - 9 * g.scale
    else:
        k = plan.spread
        offsets = [
            -k * rs * g.neck_superior,
            0.55 * k * rs * g.neck_superior + k * ra * g.neck_anterior,
            0.55 * k * rs * g.neck_superior - k * ra * g.neck_anterior,
        ]
        depth = g.head_radius - 5 * g.scale
    lines = []
    for offset in offsets:
        towards = float(g.neck_axis @ g.lateral)
        entry_t = (g.shaft_radius + 1.5 - (offset - g.neck_point) @ g.lateral) / towards
        tip_t = -np.sqrt(max(depth**2 - offset @ offset, 1.0))
        lines.append((offset + entry_t * g.neck_axis, offset + tip_t * g.neck_axis))
    return lines


def _threaded(
    q: Coordinates, entry: np.ndarray, tip: np.ndarray, core: float, thread: float, length: float
) -> np.ndarray:
    """A screw: core rod, a thread over ``length`` mm from the tip (pitch 2.75 mm), cannulated."""
    d, t = _capsule(q, entry, tip, 0.0)
    total = float(np.linalg.norm(tip - entry))
    from_tip = (F(1) - t) * F(total)
    ridge = F(0.5) + F(0.5) * np.cos(from_tip * F(2 * np.pi / 2.75))
    radius = np.where(from_tip < F(length), F(core) + F(thread - core) * ridge, F(core))
    return np.maximum(d - radius, F(1.1) - d)


def _plate(plan: ImplantPlan, g: FemurGeometry, q: Coordinates, start: float) -> np.ndarray:
    """The DHS side plate on the lateral shaft cortex, 6 mm thick and 19 mm wide."""
    p = g.shaft_point(start)
    d = [q[i] - F(p[i]) for i in range(3)]
    along = sum(d[i] * F(g.shaft_axis[i]) for i in range(3))
    across = sum(d[i] * F(g.lateral[i]) for i in range(3)) - F(g.shaft_radius + 3.0)
    depth = d[0]
    return np.maximum.reduce(
        [np.abs(along - F(plan.length / 2)) - F(plan.length / 2), np.abs(across) - F(3.0), np.abs(depth) - F(9.5)]
    )


def _femoral_parts(
    plan: ImplantPlan, g: FemurGeometry
) -> list[tuple[Callable[[Coordinates], np.ndarray], float, np.ndarray, np.ndarray]]:
    """(signed distance, density, box low, box high) of each metal part in the femur frame."""

    def box(points: list[np.ndarray], pad: float) -> tuple[np.ndarray, np.ndarray]:
        stack = np.array(points)
        return stack.min(0) - pad, stack.max(0) + pad

    parts = []
    if plan.kind == "arthroplasty":
        r = plan.head_radius
        head = lambda q: np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2) - F(r)  # noqa: E731
        parts.append((head, plan.head_density, *box([np.zeros(3)], r + 3)))
        ends = [np.zeros(3), g.shaft_point(-10 * g.scale), g.shaft_point(plan.length), g.neck_point]
        parts.append((lambda q: _stem(plan, g, q), plan.stem_density, *box(ends, 14 * g.scale)))
        return parts
    lines = _screw_lines(plan, g)
    if plan.kind == "cannulated_screws":
        for entry, tip in lines:
            parts.append(
                (lambda q, e=entry, t=tip: _threaded(q, e, t, 2.4, 3.6, 16.0), plan.stem_density, *box([entry, tip], 8))
            )
            washer = entry + 0.04 * (tip - entry)  # the washer under the screw head, on the lateral cortex
            parts.append(
                (lambda q, e=entry, w=washer: _capsule(q, e, w, 5.5)[0], plan.stem_density, *box([entry, washer], 8))
            )
        return parts
    entry, tip = lines[0]
    parts.append((lambda q: _threaded(q, entry, tip, 4.0, 6.4, 22.0), plan.stem_density, *box([entry, tip], 10)))
    barrel_end = entry + 38 * (tip - entry) / np.linalg.norm(tip - entry)

    def barrel(q: Coordinates) -> np.ndarray:
        return np.maximum(_capsule(q, entry, barrel_end, 9.5)[0], F(4.2) - _capsule(q, entry, barrel_end, 0.0)[0])

    parts.append((barrel, plan.stem_density, *box([entry, barrel_end], 12)))
    start = float((entry - g.neck_point) @ g.shaft_axis) - 6
    parts.append(
        (
            lambda q: _plate(plan, g, q, start),
            plan.stem_density,
            *box([g.shaft_point(start), g.shaft_point(start + plan.length)], 25),
        )
    )
    for i in range(4):
        level = start + 25 + i * (plan.length - 30) / 3
        outer = g.shaft_point(level) + g.lateral * (g.shaft_radius + 6)
        inner = g.shaft_point(level) - g.lateral * (g.shaft_radius + 2)
        parts.append(
            (
                lambda q, o=outer, n=inner: _threaded(q, o, n, 1.6, 2.25, 30.0),
                STEEL if plan.stem_density > 5 else plan.stem_density,
                *box([outer, inner], 5),
            )
        )
    return parts


def add_implant(
    plan: ImplantPlan,
    grid: Grid,
    g: FemurGeometry,
    pose: Pose,
    cup_pose: Pose,
    materials: Materials,
) -> list[tuple[tuple[slice, slice, slice], np.ndarray]]:
    """Draw the implant's metal into ``materials``; returns the femoral parts' occupancy per window
    (for the femur region). ``cup_pose`` places the acetabulum (side mirror, no leg motion)."""
    edge = grid.spacing
    occupied = []
    for distance, metal, low, high in _femoral_parts(plan, g):
        found = pose.window(grid, low, high)
        if found is None:
            continue
        slices, q = found
        occupancy = soft_step(distance(q), edge)
        add(materials, grid, "metal", F(metal) * occupancy, slices)
        occupied.append((slices, occupancy))
    if plan.kind == "arthroplasty":
        outer, inclination, anteversion = plan.cup
        opening = np.array(
            [-np.sin(np.deg2rad(anteversion)), np.cos(np.deg2rad(inclination)), np.sin(np.deg2rad(inclination))]
        )
        opening /= np.linalg.norm(opening)
        found = cup_pose.window(grid, np.full(3, -outer - 3), np.full(3, outer + 3))
        if found is not None:
            slices, q = found
            r = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
            face = q[0] * F(opening[0]) + q[1] * F(opening[1]) + q[2] * F(opening[2])
            shell = np.maximum(np.abs(r - F(outer - 1.5)) - F(1.5), face)
            add(materials, grid, "metal", F(DENSITY["titanium"]) * soft_step(shell, edge), slices)
    return occupied
