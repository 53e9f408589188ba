"""The proximal femur as analytic signed-distance primitives in the femur frame (:mod:`.femur_frame`),
with its cortical shell and a 3-D trabecular texture.

Anatomy (adult textbook values, scaled by the patient's size; see ../shared/design/radiograph-realism.md):
femoral head (43–56 mm, fovea capitis), neck (elliptic, ~30–35 mm high, narrowest mid-neck, flaring to
head and trochanters) at a neck-shaft angle of 125–135° and 10–15° anteversion, greater trochanter
(lateral, its tip about level with the head centre), lesser trochanter (posteromedial, 3–5 cm below
the neck base), intertrochanteric crest and line, a slightly bowed shaft (cortex 5–7 mm, medullary
canal) and the calcar (thick medial neck cortex).

Trabeculae follow the classical systems (Singh et al., J Bone Joint Surg Am 1970): principal
compressive (calcar → superior head), principal tensile (lateral cortex below the greater trochanter,
arching through the superior neck into the inferior head), secondary compressive and tensile groups,
the greater-trochanter group, and Ward's triangle (sparse) between them. Each group is a family of
sheets (level sets of a radial angle or radius) whose 1-D cosine profile is warped by a smooth 3-D
phase field, so the projection shows streaks, not noise. Osteoporosis (``patient.bone_density``)
removes the groups in Singh's order and thins the cortex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cds_service.training.phantoms.femur_frame import Coordinates, rotation
from cds_service.training.phantoms.patient import Patient
from cds_service.training.phantoms.volume import DENSITY, soft_step

F = np.float32

#: The trabecular groups, in the order osteoporosis removes them (Singh index 6 → 1).
GROUPS = ("secondary_tensile", "secondary_compressive", "greater_trochanter", "principal_tensile", "compressive")
#: bone_density at which each group of :data:`GROUPS` has gone (fades over the 0.15 above it).
_SINGH_LOSS = (0.78, 0.72, 0.66, 0.52, 0.0)


@dataclass(frozen=True)
class FemurGeometry:
    """One proximal femur in its femur frame (mm, (a, b, c) = posterior, distal, lateral)."""

    scale: float
    head_radius: float
    joint_space: float
    neck_axis: np.ndarray  # unit, head → shaft
    neck_superior: np.ndarray  # unit ⊥ neck axis, toward the superior neck surface
    neck_anterior: np.ndarray  # unit ⊥ both, toward anterior
    neck_length: float  # head centre → shaft axis, along the neck axis
    neck_half: tuple[float, float]  # mid-neck half height (superior-inferior) and half depth (AP)
    neck_flare: float  # 1/mm: radius grows by flare·(t − t_mid)² toward the trochanters
    head_flare: float  # 1/mm: the same toward the head (the head-neck junction's concave offset)
    shaft_axis: np.ndarray  # unit, distal (medial tilt of the anatomical axis)
    lateral: np.ndarray  # unit ⊥ shaft axis in the coronal plane, lateral
    shaft_radius: float
    shaft_cortex: float
    bow: float  # anterior bow, 1/mm (offset = bow·τ²)
    lesser_level: float  # τ (along the shaft axis from the neck-shaft point) of the lesser trochanter
    metaphysis: tuple[np.ndarray, np.ndarray]  # ellipsoid centre, radii
    greater: tuple[np.ndarray, np.ndarray]
    lesser: tuple[np.ndarray, np.ndarray]
    crest: tuple[np.ndarray, np.ndarray]  # intertrochanteric crest (posterior) segment
    line: tuple[np.ndarray, np.ndarray]  # intertrochanteric line (anterior) segment
    fovea: np.ndarray
    fovea_radius: float
    cortex: float  # base cortical thickness (head, neck)
    calcar: float  # extra medial neck cortex
    cortical_density: float
    cancellous: float  # base trabecular bone density (g/cm³)
    groups: tuple[float, ...]  # weight of each of GROUPS after osteoporotic loss
    wavelength: float  # trabecular sheet spacing as drawn (band-limited to the grid)
    waves: np.ndarray  # [4, 5]: phase-field plane waves (k_a, k_b, k_c, phase, amplitude)
    group_phase: np.ndarray  # [5] random phase per group
    sclerosis: float  # subchondral sclerosis of the superior head (osteoarthritis)
    osteophyte: float  # head-neck osteophyte ring size (osteoarthritis), mm; 0 = none

    @property
    def neck_point(self) -> np.ndarray:
        """Where the neck axis meets the shaft axis."""
        return self.neck_length * self.neck_axis

    def shaft_point(self, tau: float) -> np.ndarray:
        """The (unbowed) shaft axis ``tau`` mm distal of the neck-shaft point."""
        return self.neck_point + tau * self.shaft_axis

    def neck_radii(self, t: float) -> tuple[float, float]:
        """The neck's half height and half depth at ``t`` mm from the head centre along the axis."""
        mid = 0.55 * self.neck_length
        flare = self.head_flare * max(mid - t, 0.0) ** 2 + self.neck_flare * max(t - mid, 0.0) ** 2
        return self.neck_half[0] + flare, self.neck_half[1] + flare

    @property
    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """Femur-frame box holding the proximal femur above the shaft's cut (see :func:`bounds`)."""
        return bounds(self, 400.0)


def bounds(geometry: FemurGeometry, distal: float) -> tuple[np.ndarray, np.ndarray]:
    """Femur-frame box of the proximal femur down to ``b = distal`` mm."""
    r = geometry.head_radius + 6 * geometry.scale
    lateral = geometry.greater[0][2] + geometry.greater[1][2] + 12 * geometry.scale
    medial = min(-r, geometry.shaft_point(distal)[2] - geometry.shaft_radius - 4)
    depth = 45 * geometry.scale + geometry.bow * distal**2
    return np.array([-depth, -r, medial]), np.array([45 * geometry.scale, distal, lateral])


def draw_geometry(
    patient: Patient,
    acetabulum_radius: float,
    rng: np.random.Generator,
    *,
    spacing: float = 1.0,
    osteoarthritis: bool = False,
) -> FemurGeometry:
    """Draw one proximal femur. Always makes the same number of draws, in the same order."""
    u = rng.random(16)
    waves = rng.normal(size=(4, 3))
    wave_phase = rng.uniform(0, 2 * np.pi, 4)
    group_phase = rng.uniform(0, 2 * np.pi, len(GROUPS))
    s = float(patient.scale)
    bd = float(patient.bone_density)
    joint = 3.0 + 2.0 * u[0] if not osteoarthritis else 0.8 + 1.2 * u[0]
    head_radius = float(acetabulum_radius) - joint
    neck_shaft = 125.0 + 10.0 * u[1]
    anteversion = 10.0 + 5.0 * u[2]
    tilt = np.deg2rad(5.0 + 3.0 * u[3])
    shaft_axis = np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    lateral = np.array([0.0, np.sin(tilt), np.cos(tilt)])
    towards = rotation(shaft_axis, anteversion) @ lateral  # lateral turned posteriorly by anteversion
    beta = np.deg2rad(180.0 - neck_shaft)
    neck_axis = np.cos(beta) * shaft_axis + np.sin(beta) * towards
    superior = -shaft_axis + (shaft_axis @ neck_axis) * neck_axis
    superior /= np.linalg.norm(superior)
    anterior = np.cross(neck_axis, superior)
    anterior = anterior if anterior[0] < 0 else -anterior
    offset = (40.0 + 6.0 * u[4]) * s  # head centre to shaft axis, across
    neck_length = offset / float(neck_axis @ lateral)
    half = ((14.0 + 2.0 * u[5]) * s, (12.0 + 1.5 * u[5]) * s)
    flare = (6.0 + 2.0 * u[6]) * s / (0.45 * neck_length) ** 2
    head_flare = max(0.74 * head_radius - half[0], 0.0) / max(0.55 * neck_length - 0.6 * head_radius, 5.0) ** 2
    shaft_radius = (13.5 + 1.5 * u[7]) * s
    p = neck_length * neck_axis
    lesser_level = (30.0 + 8.0 * u[8]) * s
    posterior = np.array([1.0, 0.0, 0.0])

    def shaft(tau: float) -> np.ndarray:
        return p + tau * shaft_axis

    metaphysis = (shaft(10 * s) - 4 * s * lateral, np.array([16.0, 30.0, 19.0]) * s)
    greater = (
        p + np.array([5.0, -(13.0 + 3.0 * u[9]), 6.0]) * s,
        np.array([15.0, 19.0 + 2 * u[9], 11.0]) * s,
    )
    lesser_c = shaft(lesser_level) + (9 * posterior - 12 * lateral) * s
    lesser = (lesser_c, np.array([8.0, 10.0 + 2 * u[10], 7.5]) * s)
    crest = (greater[0] + np.array([10.0, 12.0, -4.0]) * s, lesser_c + np.array([-1.0, -7.0, 5.0]) * s)
    line = (greater[0] + np.array([-13.0, 14.0, -6.0]) * s, lesser_c + np.array([-17.0, -6.0, 6.0]) * s)
    fovea_dir = np.array([0.25 * (u[11] - 0.3), 0.35, -1.0])
    fovea = head_radius * fovea_dir / np.linalg.norm(fovea_dir)
    groups = tuple(
        float(np.clip((bd - loss) / 0.15, 0.0, 1.0)) if loss > 0 else float(np.clip(bd, 0.4, 1.0))
        for loss in _SINGH_LOSS
    )
    k = 2 * np.pi / (10.0 + 6.0 * u[12]) * waves / np.linalg.norm(waves, axis=1, keepdims=True)
    amplitude = np.full(4, 0.5 + 0.4 * u[13])
    return FemurGeometry(
        scale=s,
        head_radius=head_radius,
        joint_space=joint,
        neck_axis=neck_axis,
        neck_superior=superior,
        neck_anterior=anterior,
        neck_length=float(neck_length),
        neck_half=half,
        neck_flare=float(flare),
        head_flare=float(head_flare),
        shaft_axis=shaft_axis,
        lateral=lateral,
        shaft_radius=shaft_radius,
        shaft_cortex=(5.0 + 2.0 * u[14]) * s * (0.55 + 0.45 * min(bd, 1.0)),
        bow=1.0 / (2 * 1500.0),
        lesser_level=lesser_level,
        metaphysis=metaphysis,
        greater=greater,
        lesser=lesser,
        crest=crest,
        line=line,
        fovea=fovea,
        fovea_radius=(4.0 + 1.5 * u[15]) * s,
        cortex=1.3 * s * (0.6 + 0.4 * min(bd, 1.0)),
        calcar=3.5 * s * (0.5 + 0.5 * min(bd, 1.0)),
        cortical_density=DENSITY["cortical"] * (0.85 + 0.15 * min(bd, 1.0)),
        cancellous=0.16 * bd,
        groups=groups,
        wavelength=max(2.2, 2.6 * spacing),
        waves=np.column_stack([k, wave_phase, amplitude]),
        group_phase=group_phase,
        sclerosis=0.45 if osteoarthritis else 0.0,
        osteophyte=(3.0 + 2.0 * u[15]) * s if osteoarthritis else 0.0,
    )


# --- signed distances (negative inside), femur frame ---------------------------------------------


def _smin(d1: np.ndarray, d2: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth union (blend radius ``k`` mm): the fillets between neck, trochanters and shaft."""
    h = np.clip(F(0.5) + F(0.5 / k) * (d2 - d1), 0, 1)
    return d2 + (d1 - d2) * h - F(k) * h * (1 - h)


def _ellipsoid(q: Coordinates, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Ellipsoid distance bound (k0·(k0 − 1)/k1; exact on the axes, good near the surface)."""
    pa, pb, pc = ((q[i] - F(centre[i])) for i in range(3))
    k0 = np.sqrt((pa / F(radii[0])) ** 2 + (pb / F(radii[1])) ** 2 + (pc / F(radii[2])) ** 2)
    k1 = np.sqrt((pa / F(radii[0] ** 2)) ** 2 + (pb / F(radii[1] ** 2)) ** 2 + (pc / F(radii[2] ** 2)) ** 2)
    return k0 * (k0 - 1) / np.maximum(k1, F(1e-6))


def _segment_distance(q: Coordinates, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance to the segment ``start``–``end``."""
    axis = end - start
    length2 = float(axis @ axis)
    d = [q[i] - F(start[i]) for i in range(3)]
    t = np.clip((d[0] * F(axis[0]) + d[1] * F(axis[1]) + d[2] * F(axis[2])) / F(length2), 0, 1)
    return np.sqrt(sum((d[i] - t * F(axis[i])) ** 2 for i in range(3)))


def _dot(q: Coordinates, v: np.ndarray, origin: np.ndarray | None = None) -> np.ndarray:
    if origin is None:
        return q[0] * F(v[0]) + q[1] * F(v[1]) + q[2] * F(v[2])
    return (q[0] - F(origin[0])) * F(v[0]) + (q[1] - F(origin[1])) * F(v[1]) + (q[2] - F(origin[2])) * F(v[2])


def _neck(g: FemurGeometry, q: Coordinates) -> np.ndarray:
    t = _dot(q, g.neck_axis)
    tc = np.clip(t, 0, g.neck_length)
    mid = F(0.55 * g.neck_length)
    flare = F(g.head_flare) * np.maximum(mid - tc, 0) ** 2 + F(g.neck_flare) * np.maximum(tc - mid, 0) ** 2
    rs, ra = F(g.neck_half[0]) + flare, F(g.neck_half[1]) + flare
    ps, pa = _dot(q, g.neck_superior), _dot(q, g.neck_anterior)
    caps = np.maximum(-t, t - F(g.neck_length))  # negative between the tube's two ends
    k0 = np.sqrt((ps / rs) ** 2 + (pa / ra) ** 2)
    k1 = np.sqrt((ps / rs**2) ** 2 + (pa / ra**2) ** 2)
    radial = k0 * (k0 - 1) / np.maximum(k1, F(1e-6))
    return np.maximum(radial, caps)


def shaft_axis_offset(g: FemurGeometry, q: Coordinates) -> tuple[np.ndarray, list[np.ndarray]]:
    """τ along the shaft axis from the neck-shaft point, and the vector from the (bowed) axis."""
    p = g.neck_point
    tau = _dot(q, g.shaft_axis, p)
    bow = F(g.bow) * np.maximum(tau, 0) ** 2
    radial = [q[i] - F(p[i]) - tau * F(g.shaft_axis[i]) for i in range(3)]
    radial[0] = radial[0] + bow  # the shaft bows anteriorly (−a)
    return tau, radial


def signed_distance(g: FemurGeometry, q: Coordinates, *, shaft_only: bool = False) -> np.ndarray:
    """Signed distance (mm, negative inside) to the proximal femur's outer surface."""
    tau, radial = shaft_axis_offset(g, q)
    shaft = np.maximum(np.sqrt(radial[0] ** 2 + radial[1] ** 2 + radial[2] ** 2) - F(g.shaft_radius), -tau)
    if shaft_only:
        return shaft
    s = g.scale
    head = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2) - F(g.head_radius)
    d = _smin(head, _neck(g, q), 5 * s)
    d = _smin(d, _ellipsoid(q, *g.metaphysis), 9 * s)
    d = _smin(d, _ellipsoid(q, *g.greater), 7 * s)
    d = _smin(d, shaft, 14 * s)
    d = _smin(d, _ellipsoid(q, *g.lesser), 6 * s)
    d = _smin(d, _segment_distance(q, *g.crest) - F(4.0 * s), 4 * s)
    d = _smin(d, _segment_distance(q, *g.line) - F(2.0 * s), 3 * s)
    fovea = np.sqrt(sum((q[i] - F(g.fovea[i])) ** 2 for i in range(3))) - F(g.fovea_radius)
    d = np.maximum(d, -fovea)
    if g.osteophyte > 0:
        # superolateral and inferomedial lips, where the capsule pulls (not a full collar)
        d = np.minimum(d, osteophyte_distance(g, q, g.osteophyte, -50.0, 100.0))
        d = np.minimum(d, osteophyte_distance(g, q, 0.8 * g.osteophyte, 140.0, 80.0))
    return d


def osteophyte_distance(g: FemurGeometry, q: Coordinates, size: float, start: float, span: float) -> np.ndarray:
    """A bony lip around the head-neck junction (a torus sector about the neck axis): ``size`` mm
    thick, over ``span`` degrees from ``start`` (0° = superior, 90° = anterior)."""
    t = _dot(q, g.neck_axis)
    ps, pa = _dot(q, g.neck_superior), _dot(q, g.neck_anterior)
    junction = 0.78 * g.head_radius
    ring = float(np.sqrt(max(g.head_radius**2 - junction**2, 1.0)))
    radial = np.sqrt(ps**2 + pa**2)
    d = np.sqrt((t - F(junction)) ** 2 + (radial - F(ring)) ** 2) - F(size)
    if span >= 360:
        return d
    angle = np.degrees(np.arctan2(pa, ps)) - F(start + span / 2)
    angle = (angle + 180) % 360 - 180
    return np.maximum(d, (np.abs(angle) - F(span / 2)) * F(np.pi / 180 * ring))


# --- density -------------------------------------------------------------------------------------


def _cortex(g: FemurGeometry, q: Coordinates, tau: np.ndarray) -> np.ndarray:
    """Cortical thickness (mm): thin over head and neck, thick calcar, 5–7 mm down the shaft."""
    shaft = np.clip((tau - F(g.lesser_level - 5 * g.scale)) / F(45 * g.scale), 0, 1)
    thickness = F(g.cortex) + shaft * F(g.shaft_cortex - g.cortex)
    start, end = calcar_line(g)
    calcar = np.exp(-((_segment_distance(q, start, end) / F(8 * g.scale)) ** 2))
    return thickness + F(g.calcar) * calcar


def calcar_line(g: FemurGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The calcar: inferior neck cortex from the head-neck junction to the medial cortex above the
    lesser trochanter."""
    t = 0.85 * g.head_radius
    start = t * g.neck_axis - g.neck_radii(t)[0] * g.neck_superior
    end = g.shaft_point(g.lesser_level - 8 * g.scale) - g.lateral * g.shaft_radius
    return start, end


def _streaks(g: FemurGeometry, level: np.ndarray, along: np.ndarray, phase: np.ndarray, group: int) -> np.ndarray:
    """Plates across ``level`` (spacing = wavelength), broken into struts along ``along``: streaks."""
    plate = F(0.5) + F(0.5) * np.cos(level * F(2 * np.pi / g.wavelength) + phase + F(g.group_phase[group]))
    strut = F(0.6) + F(0.4) * np.cos(along * F(2 * np.pi / (2.6 * g.wavelength)) - F(1.7) * phase)
    return plate * plate * strut * F(2.2)


def _circle(p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (b, c) and radius of the circle through three coronal (b, c) points."""
    a = np.array([[2 * (p2[0] - p1[0]), 2 * (p2[1] - p1[1])], [2 * (p3[0] - p1[0]), 2 * (p3[1] - p1[1])]])
    rhs = np.array([p2 @ p2 - p1 @ p1, p3 @ p3 - p1 @ p1])
    centre = np.linalg.solve(a, rhs)
    return centre, float(np.linalg.norm(p1 - centre))


def trabecular(g: FemurGeometry, q: Coordinates, tau: np.ndarray) -> np.ndarray:
    """Cancellous bone density (g/cm³) inside the cortex: the trabecular systems and Ward's triangle."""
    s = g.scale
    phase = sum(F(w[4]) * np.sin(q[0] * F(w[0]) + q[1] * F(w[1]) + q[2] * F(w[2]) + F(w[3])) for w in g.waves)
    b, c = q[1], q[2]
    superior_head = -g.shaft_axis * 0.75 * g.head_radius + g.lateral * 0.1 * g.head_radius
    calcar = g.neck_axis * 0.8 * g.neck_length - g.neck_superior * 0.9 * g.neck_half[0]
    along = calcar - superior_head
    focus = calcar + 70 * s * along / np.linalg.norm(along)
    weights = []
    levels = []
    alongs = []
    # principal compressive: sheets fanning from below the calcar up into the weight-bearing head
    weights.append(np.exp(-((_segment_distance(q, calcar, superior_head) / F(10 * s)) ** 2)))
    levels.append(np.arctan2(c - F(focus[2]), b - F(focus[1])) * F(80 * s))
    alongs.append(np.sqrt((b - F(focus[1])) ** 2 + (c - F(focus[2])) ** 2))
    # principal tensile: arcs from the lateral cortex below the greater trochanter into the inferior head
    t1 = g.shaft_point(18 * s) + g.lateral * g.shaft_radius
    t2 = 0.5 * g.neck_length * g.neck_axis + 0.55 * g.neck_half[0] * g.neck_superior
    t3 = -0.45 * g.head_radius * g.neck_superior - 0.2 * g.head_radius * g.neck_axis
    centre, radius = _circle(t1[1:], t2[1:], t3[1:])
    r = np.sqrt((b - F(centre[0])) ** 2 + (c - F(centre[1])) ** 2)
    weights.append(np.exp(-(((r - F(radius)) / F(7 * s)) ** 2)) * (c > F(t3[2] - 6 * s)))
    levels.append(r)
    alongs.append(np.arctan2(c - F(centre[1]), b - F(centre[0])) * F(radius))
    # secondary compressive: from the medial cortex below the calcar fanning to the greater trochanter
    low = g.shaft_point(g.lesser_level * 0.6) - g.lateral * g.shaft_radius
    weights.append(np.exp(-((_segment_distance(q, low, g.greater[0]) / F(9 * s)) ** 2)))
    levels.append(np.arctan2(c - F(low[2]), b - F(low[1] + 30 * s)) * F(60 * s))
    alongs.append(np.sqrt((b - F(low[1] + 30 * s)) ** 2 + (c - F(low[2])) ** 2))
    # secondary tensile: flatter arcs below the principal tensile group
    r2 = np.sqrt((b - F(centre[0] + 25 * s)) ** 2 + (c - F(centre[1])) ** 2)
    weights.append(np.exp(-(((r2 - F(radius)) / F(7 * s)) ** 2)) * (tau < F(g.lesser_level)))
    levels.append(r2)
    alongs.append(np.arctan2(c - F(centre[1]), b - F(centre[0] + 25 * s)) * F(radius))
    # greater-trochanter group: near-vertical sheets in the trochanter
    gt = np.clip(-_ellipsoid(q, *g.greater) / F(4 * s), 0, 1)
    weights.append(gt)
    levels.append(c + F(0.3) * b)
    alongs.append(b)
    order = {"compressive": 0, "principal_tensile": 1, "secondary_compressive": 2, "secondary_tensile": 3}
    order["greater_trochanter"] = 4
    density = F(0.5 * g.cancellous) * np.ones_like(b)
    for name, loss_weight in zip(GROUPS, g.groups, strict=True):
        i = order[name]
        if loss_weight <= 0:
            continue
        density = density + F(2.2 * g.cancellous * loss_weight) * weights[i] * _streaks(
            g, levels[i], alongs[i], phase, i
        )
    head = np.clip(-(np.sqrt(q[0] ** 2 + b**2 + c**2) - F(g.head_radius)) / F(6 * s), 0, 1)
    density = density + F(0.4 * g.cancellous) * head * _streaks(g, levels[0], alongs[0], phase, 0)
    # trabecular bone fades into the fatty medullary canal below the lesser trochanter
    metaphysis = np.clip(1 - (tau - F(g.lesser_level)) / F(35 * s), 0.04, 1)
    return density * metaphysis


def density(
    g: FemurGeometry, q: Coordinates, edge: float, *, shaft_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Bone density (g/cm³) and occupancy (0–1) of the undisplaced femur at femur-frame points ``q``;
    ``edge`` is the partial-volume width (the voxel spacing). Only voxels that touch bone get the
    cortex and trabecular fields (most of a window is soft tissue)."""
    sdf = signed_distance(g, q, shaft_only=shaft_only)
    occupancy = soft_step(sdf, edge)
    bone = np.zeros_like(occupancy)
    touched = occupancy > 0
    if not touched.any():
        return bone, occupancy
    sub = tuple(np.broadcast_to(axis, sdf.shape)[touched] for axis in q)
    near = sdf[touched]
    tau, _ = shaft_axis_offset(g, sub)
    inner = soft_step(near + _cortex(g, sub, tau), edge)
    cancellous = inner * trabecular(g, sub, tau) if not shaft_only else F(0.002) * inner
    values = F(g.cortical_density) * (occupancy[touched] - inner) + cancellous
    if g.sclerosis > 0:
        rim = np.sqrt(sub[0] ** 2 + sub[1] ** 2 + sub[2] ** 2) - F(g.head_radius - 3 * g.scale)
        up = np.clip(-_dot(sub, g.shaft_axis) / F(0.5 * g.head_radius), 0, 1)
        values = values + F(g.sclerosis) * inner * up * np.exp(-((rim / F(2.5 * g.scale)) ** 2))
    bone[touched] = values
    return bone, occupancy.astype(F, copy=False)
