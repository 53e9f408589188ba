"""One proximal femur, built into the material volumes: anatomy, fracture fragments and implant.

:func:`build_femur` draws the femur's shape (:mod:`.femur_shape`), its fracture (:mod:`.fractures`)
and implant (:mod:`.implants`) from ``rng`` in that fixed order, places it at the acetabulum with the
patient's leg rotation and abduction (:mod:`.femur_frame`), and evaluates every fragment only inside
its own window. It returns a :class:`FemurTruth`: where the head, neck, trochanters and fracture
surfaces ended up, the Shenton's-line points of the inferior neck, and the proximal femur's region
(from the bone itself) that the localisation metric and the heat-map guidance use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cds_service.training.phantoms.femur_frame import Coordinates, Motion, Pose, leg_pose
from cds_service.training.phantoms.femur_shape import FemurGeometry, bounds, density, draw_geometry, signed_distance
from cds_service.training.phantoms.fractures import Fracture, Fragment, draw_fracture, site_of, surface_points
from cds_service.training.phantoms.implants import IMPLANTS, add_implant, draw_implant, resected, stem_void
from cds_service.training.phantoms.patient import Patient
from cds_service.training.phantoms.truth import LABELS
from cds_service.training.phantoms.volume import Grid, Materials, add, soft_step

F = np.float32
#: The localisation region runs from the head to this far (mm) below the lesser trochanter.
REGION_BELOW_LESSER = 50.0


@dataclass(frozen=True)
class FemurTruth:
    """Where one built femur lies, in the patient frame ((z, y, x) mm; see :mod:`.volume`)."""

    side: str
    site: str  # 'none' | 'femoral_neck' | 'trochanteric'
    head_centre: np.ndarray  # where the head ends up, displacement included
    head_radius: float
    neck_centre: np.ndarray
    neck_axis: np.ndarray  # unit, head → shaft
    region: np.ndarray  # bool, grid.shape: head to 5 cm below the lesser trochanter, from the bone
    fracture_points: np.ndarray | None  # [N, 3] on the fracture surface(s) inside the bone
    inferior_neck: np.ndarray  # [N, 3] along the inferior neck cortex (Shenton's line, lateral half)
    label: str = "none"
    position: str = "intact"  # subcapital/transcervical/basicervical, pertrochanteric, ...
    greater_trochanter: np.ndarray = field(default_factory=lambda: np.zeros(3))  # its centre
    lesser_trochanter: np.ndarray = field(default_factory=lambda: np.zeros(3))
    implant: str | None = None
    geometry: FemurGeometry | None = None  # femur-frame anatomy (for mimics)
    frame: np.ndarray = field(default_factory=lambda: np.eye(4))  # femur frame → patient, head fragment
    shaft_frame: np.ndarray = field(default_factory=lambda: np.eye(4))  # the same for the distal fragment
    displacement: dict[str, float] = field(default_factory=dict)


def _intact() -> Fracture:
    return Fracture("none", "intact", (), (Fragment("whole", (), Motion.identity()),), 0.0, 0.0, 0.0)


def _points(q: np.ndarray) -> Coordinates:
    return (q[:, 0].astype(F), q[:, 1].astype(F), q[:, 2].astype(F))


def _inferior_neck(g: FemurGeometry, count: int = 16) -> np.ndarray:
    """Femur-frame points 0.8 mm inside the inferior (medial) neck cortex, from the head-neck
    junction (one head radius from the head's centre: nearer, the rays meet the head's sphere, which
    Shenton's line does not follow) to 70 % of the way to the shaft axis, where the neck's flare turns
    into the medial shaft: bisection along rays from the neck axis toward the inferior surface."""
    rays = [(t * g.neck_axis, -g.neck_superior) for t in np.linspace(g.head_radius, 0.7 * g.neck_length, count)]
    starts = np.array([r[0] for r in rays])
    dirs = np.array([r[1] for r in rays])
    low, high = np.zeros(len(rays)), np.full(len(rays), 80.0)
    for _ in range(30):
        mid = (low + high) / 2
        inside = signed_distance(g, _points(starts + mid[:, None] * dirs)) < 0
        low, high = np.where(inside, mid, low), np.where(inside, high, mid)
    return starts + (low - 0.8)[:, None] * dirs


def build_femur(
    grid: Grid,
    patient: Patient,
    side: str,
    acetabulum_centre: np.ndarray,
    acetabulum_radius: float,
    label: str,
    rng: np.random.Generator,
    materials: Materials,
    *,
    fracture_visible: bool = True,
    implant: str | None = None,
    osteoarthritis: bool = False,
) -> FemurTruth:
    """Build one proximal femur into ``materials['bone']`` (and ``['metal']`` for an implant).

    Draws the shape, then the fracture (``label`` in :data:`~.truth.LABELS`), then the implant (None or
    one of :data:`~.implants.IMPLANTS`, only with ``label == 'none'``); ``fracture_visible=False``
    makes the same draws and displacement with the gap and sclerotic band at zero contrast.
    """
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}")
    if implant is not None and (implant not in IMPLANTS or label != "none"):
        raise ValueError(f"implant {implant!r} needs a known kind on a non-fractured hip (label {label!r})")
    g = draw_geometry(patient, acetabulum_radius, rng, spacing=grid.spacing, osteoarthritis=osteoarthritis)
    index = 0 if side == "R" else 1
    pose = leg_pose(side, acetabulum_centre, patient.leg_rotation[index], patient.leg_abduction[index])
    drawn = draw_fracture(label, g, rng)
    plan = draw_implant(implant, g, acetabulum_radius, rng) if implant is not None else None
    fracture = drawn if drawn is not None else resected(plan, g) if plan and plan.kind == "arthroplasty" else _intact()
    poses = [pose.moved(f.motion) for f in fracture.fragments]
    edge = grid.spacing
    gap = fracture.gap if fracture_visible else 0.0
    band = fracture.band if fracture_visible else 0.0
    void = stem_void(plan, g)
    distal = max(80.0, grid.origin[1] + grid.spacing * grid.shape[1] - float(acetabulum_centre[1])) / 0.95 + 10
    split = float(g.shaft_point(g.lesser_level + 55 * g.scale)[1])
    region_limit = float(g.lesser[0][1]) + REGION_BELOW_LESSER

    jobs = []
    for i, fragment in enumerate(fracture.fragments):
        low, high = fragment.box if fragment.box is not None else bounds(g, distal)
        parts = [(low, np.minimum(high, [high[0], split, high[2]]), False)]
        if high[1] > split:
            shaft_low, shaft_high = bounds(g, float(high[1]))
            shaft_low[1] = split
            parts.append((shaft_low, shaft_high, True))
        for part_low, part_high, shaft_only in parts:
            found = poses[i].window(grid, part_low, part_high)
            if found is not None:
                jobs.append((i, found, shaft_only))
    region = np.zeros(grid.shape, bool)
    if jobs:
        lo = [min(j[1][0][k].start for j in jobs) for k in range(3)]
        hi = [max(j[1][0][k].stop for j in jobs) for k in range(3)]
        union = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        occupied = np.zeros([b - a for a, b in zip(lo, hi, strict=True)], F)
    for i, (slices, q), shaft_only in jobs:
        mask = (q[1] > F(split)) if shaft_only else (q[1] <= F(split))
        bone, occupancy = density(g, q, edge, shaft_only=shaft_only)
        keep = fracture.membership(i, q, edge, gap=gap) * mask
        keep_whole = keep if gap == 0 else fracture.membership(i, q, edge, gap=0) * mask
        bone = bone * keep
        if void is not None:
            bone = bone * void(q)
        if i == 1 and fracture.surfaces and band > 0:
            near = fracture.surfaces[0].distance(q) / F(fracture.band_width)
            bone = bone + F(band) * np.exp(-(near**2)) * fracture.crack_weight(q) * occupancy * mask
        if i == 1 and fracture.buckle is not None and fracture_visible:
            centre, radius = fracture.buckle
            lump = np.sqrt(sum((q[k] - F(centre[k])) ** 2 for k in range(3))) - F(radius)
            bone = bone + F(g.cortical_density) * soft_step(lump, edge) * (1 - occupancy) * mask
        add(materials, grid, "bone", bone.astype(F, copy=False), slices)
        local = tuple(slice(s.start - u.start, s.stop - u.start) for s, u in zip(slices, union, strict=True))
        occupied[local] += occupancy * keep_whole * (q[1] < F(region_limit))
    if plan is not None:
        cup_pose = leg_pose(side, acetabulum_centre, 0.0, 0.0)
        for slices, occupancy in add_implant(plan, grid, g, pose, cup_pose, materials):
            if jobs:
                local = tuple(slice(s.start - u.start, s.stop - u.start) for s, u in zip(slices, union, strict=True))
                occupied[local] = np.maximum(occupied[local], occupancy)
    if jobs:
        region[union] = occupied > 0.5

    def where(point: np.ndarray) -> int:
        member = [
            float(np.asarray(fracture.membership(i, _points(point[None]), 0.5, gap=0)).ravel()[0])
            for i in range(len(poses))
        ]
        return int(np.argmax(member)) if max(member) > 0.5 else -1

    neck_local = 0.5 * g.neck_length * g.neck_axis
    neck_fragment = max(where(neck_local), 0)
    neck_pose = poses[neck_fragment]
    shenton = _inferior_neck(g)
    owners = np.array([where(p) for p in shenton])
    inferior = (
        np.concatenate([poses[i].to_patient(shenton[owners == i]) for i in range(len(poses)) if (owners == i).any()])
        if (owners >= 0).any()
        else np.zeros((0, 3))
    )
    points = None
    if drawn is not None:
        pieces = []
        for local_points, negative, positive in surface_points(drawn, g):
            pieces += [poses[negative].to_patient(local_points), poses[positive].to_patient(local_points)]
        points = np.concatenate(pieces) if pieces else np.zeros((0, 3))
    head_pose = pose.moved(fracture.fragments[0].motion) if fracture.fragments[0].name == "head" else pose
    shaft_pose = poses[1] if len(poses) > 1 else poses[0]
    return FemurTruth(
        side=side,
        site=site_of(label),
        head_centre=head_pose.to_patient(np.zeros((1, 3)))[0],
        head_radius=plan.head_radius if plan is not None and plan.kind == "arthroplasty" else g.head_radius,
        neck_centre=neck_pose.to_patient(neck_local[None])[0],
        neck_axis=neck_pose.direction(g.neck_axis),
        region=region,
        fracture_points=points,
        inferior_neck=inferior,
        label=label,
        position=fracture.position,
        greater_trochanter=poses[max(where(g.greater[0]), 0)].to_patient(g.greater[0][None])[0],
        lesser_trochanter=poses[max(where(g.lesser[0]), 0)].to_patient(g.lesser[0][None])[0],
        implant=implant,
        geometry=g,
        frame=head_pose.homogeneous(),
        shaft_frame=shaft_pose.homogeneous(),
        displacement=dict(fracture.extra),
    )


def frame_pose(frame: np.ndarray) -> Pose:
    """A :class:`~.femur_frame.Pose` from a FemurTruth ``frame`` / ``shaft_frame`` matrix."""
    return Pose(frame[:3, :3], frame[:3, 3])
