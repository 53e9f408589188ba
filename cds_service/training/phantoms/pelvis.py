"""A parametric 3-D bony pelvis for the version-2 phantoms: bone density (g/cm³) in the patient frame.

Built from signed-distance shapes (:mod:`.pelvis_shapes`) in a neutral pelvis frame and then posed
by the patient's scale, pelvic tilt, rotation and offset. The parts are those a reader checks on an
AP pelvis (../shared/design/radiograph-realism.md, "Anatomy"): iliac wings thin centrally with a
thick crest, ASIS/AIIS and the arcuate (iliopectineal) line; acetabula as hemispherical sockets
opening antero-inferolaterally, with a sclerotic roof (sourcil), anterior and posterior rims that
project across the head, the fossa and a thin medial wall whose edge gives the teardrop and the
ilioischial line; ischium with spine and tuberosity; superior and inferior pubic rami meeting at the
symphysis (4–6 mm gap) and bounding the obturator foramina; a sacrum with four pairs of foramina,
sacroiliac joints (2–4 mm), L4–L5 and the coccyx. Women: wider sockets and inlet, lower and more
flared wings, wider subpubic arch. Bone is a cortical shell (1.92 g/cm³ over ~1.5–2 mm, thinner
with osteoporosis) around cancellous bone textured in 3-D (band-limited noise, randomised offset).

Dimensions (adult, scale 1): head centres 176–200 mm apart, socket radius 24–28 mm, crest 100–120
mm above the head centres, symphysis centre ~47 mm below them, obturator foramen ~50 × 30 mm as
projected, L5 body 44–50 mm wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cds_service.training.phantoms.patient import Patient
from cds_service.training.phantoms.pelvis_shapes import (
    Canvas,
    Frame,
    Shape,
    Table2D,
    band_texture,
    box,
    capsule,
    clipped,
    ellipsoid,
    polygon_distance,
    slab,
    tiled,
    tube,
)
from cds_service.training.phantoms.volume import DENSITY, Grid, Materials, add, soft_step

SIDES = (("R", -1.0), ("L", 1.0))  # the patient's right is at negative x

# Iliac wing outline on its cone, (angle ° from lateral, positive posterior; y mm for a 115 mm crest).
_WING_ANTERIOR = ((-25, -18), (-33, -30), (-36, -38), (-33, -47), (-37, -58), (-40, -66))
_CREST = (  # (angle, y, tube radius): ASIS → tubercle → PSIS
    (-40, -72, 5.0),
    (-32, -86, 5.5),
    (-20, -98, 6.5),
    (-5, -107, 7.0),
    (12, -113, 6.0),
    (30, -115, 5.5),
    (50, -112, 5.5),
    (68, -104, 5.5),
    (82, -93, 6.0),
    (92, -82, 6.5),
    (96, -74, 7.0),
)
_WING_POSTERIOR = ((98, -66), (95, -56), (88, -48), (78, -40), (62, -32), (45, -26), (20, -20), (-5, -16))
_ARC_REF = 60.0  # mm per radian of the wing's (angle, y) table
# Pelvic brim (iliopectineal/arcuate line), right side (z, y, lateral u): on the sacral ala, then from
# the sacroiliac joint along the ilium and the superior pubic ramus to the pubic crest.
_BRIM_SACRAL = ((44, -77, 6), (46, -72, 26), (50, -63, 43))
_BRIM_ILIAC = (
    (48, -60, 57),
    (40, -44, 61),
    (24, -24, 63),
    (8, -4, 62),
    (-8, 8, 54),
    (-20, 14, 40),
    (-30, 21, 24),
    (-36, 26, 8),
)
# Sacroiliac joint plane, right side: a point (z, y, u) and its normal (lateral and posterior: the
# sacrum is a keystone, wider in front).
_SI_POINT, _SI_NORMAL = (65.0, -60.0, 47.0), (0.32, 0.0, 0.95)


@dataclass(frozen=True)
class PelvisTruth:
    """Landmarks of the built pelvis, patient frame (z, y, x) mm.

    ``acetabulum_centre``: where a normal femoral head's centre sits in each socket ('R'/'L');
    ``acetabulum_radius``: the socket's inner radius; ``obturator_top``: [N, 3] points along the
    superior border of each obturator foramen from its highest point medially, lateral → medial: the
    inferior border of the superior pubic ramus, the medial half of Shenton's line.
    """

    acetabulum_centre: dict[str, np.ndarray]
    acetabulum_radius: dict[str, float]
    obturator_top: dict[str, np.ndarray]
    symphysis_centre: np.ndarray | None = None
    teardrop: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class _Params:
    female: bool
    half_width: float  # lateral distance of each socket centre from the midline
    radius: dict[str, float]
    inclination: dict[str, float]
    anteversion: dict[str, float]
    crest: float  # crest height above the head centres
    wing_axis: float  # lateral position of the wing cone's axis
    wing_top: float  # the cone's radius at the crest
    symphysis_gap: float
    si_gap: float
    pubic_half: float
    foramen: tuple[float, float]  # hole semi-axes in its plane (across, vertical)
    sacrum_width: float
    l5_half_width: float
    cortex: float  # cortical thickness, mm
    cancellous: float  # cancellous bone density, g/cm³
    roof_drop: float  # osteoarthritis: how far the roof comes down toward the head
    sourcil: tuple[float, float]  # sclerotic roof: thickness mm, density g/cm³
    osteophytes: tuple[float, ...]  # per side: lateral and inferior rim sizes (mm); 0 = none
    texture_wavelength: float


def _draw(patient: Patient, rng: np.random.Generator, osteoarthritis: bool) -> _Params:
    """Every random draw of the pelvis, always in the same order and number."""
    female = patient.sex == "F"
    half_width = (97.0 if female else 89.0) + float(rng.normal(0, 3))
    radius0 = (24.8 if female else 26.8) + float(rng.normal(0, 0.8))
    radius = {s: radius0 + float(rng.normal(0, 0.3)) for s, _ in SIDES}
    inclination = {s: 45.0 + float(rng.normal(0, 3)) for s, _ in SIDES}
    anteversion = {s: 18.0 + float(rng.normal(0, 4)) for s, _ in SIDES}
    crest = (103.0 if female else 115.0) + float(rng.normal(0, 5))
    wing_axis = (59.0 if female else 55.0) + 0.6 * (half_width - (97.0 if female else 89.0))
    wing_top = (96.0 if female else 90.0) + float(rng.normal(0, 3))
    symphysis_gap = float(rng.uniform(4.0, 6.0))
    si_gap = float(rng.uniform(2.0, 4.0))
    pubic_half = (15.0 if female else 12.0) + float(rng.normal(0, 0.8))
    foramen = (
        (21.0 if female else 18.5) + float(rng.normal(0, 1)),
        (23.0 if female else 25.0) + float(rng.normal(0, 1)),
    )
    sacrum_width = (56.0 if female else 54.0) + float(rng.normal(0, 2))
    l5_half_width = (22.0 if female else 24.0) + float(rng.normal(0, 1))
    sizes = rng.uniform(3.0, 7.0, size=4)
    wavelength = float(rng.uniform(2.5, 4.0))
    bone = float(patient.bone_density)
    return _Params(
        female=female,
        half_width=half_width,
        radius=radius,
        inclination=inclination,
        anteversion=anteversion,
        crest=crest,
        wing_axis=wing_axis,
        wing_top=wing_top,
        symphysis_gap=symphysis_gap,
        si_gap=si_gap,
        pubic_half=pubic_half,
        foramen=foramen,
        sacrum_width=sacrum_width,
        l5_half_width=l5_half_width,
        cortex=1.1 + 0.9 * bone,
        cancellous=0.32 * bone,
        roof_drop=2.2 if osteoarthritis else 0.0,
        sourcil=(5.5, 1.1) if osteoarthritis else (2.8, 0.55),
        osteophytes=tuple(float(v) for v in sizes) if osteoarthritis else (0.0, 0.0, 0.0, 0.0),
        texture_wavelength=wavelength,
    )


def _p(z: float, y: float, u: float, sign: float) -> np.ndarray:
    """A pelvis-frame point from a lateral distance ``u`` on the side ``sign`` (−1 right, +1 left)."""
    return np.array([z, y, sign * u], np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float64) / float(np.linalg.norm(v))


def _opening(p: _Params, side: str, sign: float) -> np.ndarray:
    """The socket's opening axis: lateral and inferior at the inclination, anterior by the anteversion."""
    i, a = np.radians(p.inclination[side]), np.radians(p.anteversion[side])
    return np.array([-np.sin(a), np.cos(a) * np.cos(i), sign * np.cos(a) * np.sin(i)])


# --- the ilium ---------------------------------------------------------------------------------------


def _wing_profile(flatten: float = 0.35) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The wing's cross-section radius factor f(angle) — a circle flattened toward the chord from
    the ASIS (−40°) to the PSIS (96°), so the ASIS and the tubercle form the lateral contour on AP —
    and the factor turning radial into normal distance, tabulated over the angle (radians)."""
    angle = np.radians(np.arange(-180.0, 180.5, 0.5))
    half = np.radians(68.0)
    c = np.cos(angle - np.radians(28.0))
    chord = np.where(c > np.cos(half), np.cos(half) / np.maximum(c, 1e-6), 1.0)
    f = (1 - flatten) + flatten * np.minimum(chord, 1.0)
    slope = np.gradient(np.log(f), angle)
    return angle, f, 1.0 / np.sqrt(1.0 + slope * slope)


def _wing(p: _Params, sign: float) -> tuple[Shape, list[Shape]]:
    """The iliac wing: a plate on a cone about a vertical axis (narrowing toward the acetabulum),
    bounded by its outline, thin centrally and thick at the borders; and the crest tube on top."""
    k = p.crest / 115.0
    y_top, y_bottom = -p.crest, -20.0
    r_top, r_bottom = p.wing_top, 50.0
    slope = (r_top - r_bottom) / (y_bottom - y_top)
    cos_k = 1.0 / np.sqrt(1.0 + slope * slope)
    u0, z0 = p.wing_axis, 15.0
    angles, factor, normal_factor = _wing_profile()
    angles32, factor32, normal32 = (v.astype(np.float32) for v in (angles, factor, normal_factor * cos_k))

    verts = np.array(
        [(np.radians(a) * _ARC_REF, y * k) for a, y in _WING_ANTERIOR]
        + [(np.radians(a) * _ARC_REF, y * k + 2.0) for a, y, _ in _CREST]
        + [(np.radians(a) * _ARC_REF, y * k) for a, y in _WING_POSTERIOR]
    )
    s_axis = np.arange(verts[:, 0].min() - 12, verts[:, 0].max() + 12, 1.0)
    y_axis = np.arange(verts[:, 1].min() - 12, verts[:, 1].max() + 12, 1.0)
    table = Table2D(s_axis[0], y_axis[0], 1.0, polygon_distance(verts, s_axis[:, None], y_axis[None, :]))

    def distance(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        du, dz = x * np.float32(sign) - np.float32(u0), z - np.float32(z0)
        r = np.sqrt(du * du + dz * dz)
        theta = np.arctan2(dz, du)
        rw = np.maximum(np.float32(r_top) - np.float32(slope) * (y - np.float32(y_top)), np.float32(12.0))
        normal = (r - rw * np.interp(theta, angles32, factor32)) * np.interp(theta, angles32, normal32)
        d2 = table(theta * np.float32(_ARC_REF), y)
        half = np.float32(1.6) + np.float32(2.6) * np.exp(np.minimum(d2, 0.0) / np.float32(10.0))
        return np.maximum(np.abs(normal) - half, d2)

    lo_u, hi_u = u0 + r_top * np.cos(np.radians(108)) - 8, u0 + r_top + 8
    xs = sorted((sign * lo_u, sign * hi_u))
    wing = Shape((z0 - r_top - 8, y_top - 12, xs[0]), (z0 + r_top + 8, y_bottom + 4, xs[1]), distance)

    def on_cone(angle: float, y: float) -> np.ndarray:
        rw = max(r_top - slope * (y - y_top), 12.0) * float(np.interp(np.radians(angle), angles, factor))
        a = np.radians(angle)
        return _p(z0 + rw * np.sin(a), y, u0 + rw * np.cos(a), sign)

    crest_points = np.array([on_cone(a, y * k + 3.0) for a, y, _ in _CREST])
    crest_radii = np.array([r for _, _, r in _CREST])
    parts = tube(crest_points, crest_radii)
    parts.append(ellipsoid(on_cone(-40, -72 * k + 3), (7.0, 6.0, 6.0)))  # ASIS
    parts.append(ellipsoid(on_cone(-36, -38 * k), (6.5, 6.0, 5.5)))  # AIIS
    return wing, parts


# --- the acetabulum ----------------------------------------------------------------------------------


def _u_channel(centre: np.ndarray, sign: float, rho: float, limb: float, half_t: float, z_half: float) -> Shape:
    """A U open upward in the (x, y) plane, extruded along z: the radiographic teardrop."""
    cz, cy, cu = (float(v) for v in centre)
    cu *= sign

    def distance(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        du, dy = x * np.float32(sign) - np.float32(cu), y - np.float32(cy)
        arc = np.abs(np.sqrt(du * du + dy * dy) - np.float32(rho))
        limbs = np.sqrt((np.abs(du) - np.float32(rho)) ** 2 + np.maximum(-dy - np.float32(limb), 0.0) ** 2)
        d = np.where(dy > 0, arc, limbs) - np.float32(half_t)
        return np.maximum(d, np.abs(z - np.float32(cz)) - np.float32(z_half))

    lo = (cz - z_half - 1, cy - limb - 4, sign * cu - rho - 4)
    hi = (cz + z_half + 1, cy + rho + 4, sign * cu + rho + 4)
    return Shape(lo, hi, distance)


def _acetabulum(p: _Params, side: str, sign: float) -> tuple[list[tuple[Shape, float]], list[Shape], np.ndarray]:
    """The socket's bone (unions), its cavity and fossa (carves) and the teardrop's lowest point."""
    hw, r = p.half_width, p.radius[side]
    c = _p(0, 0, hw, sign)
    a = _opening(p, side, sign)
    body = ellipsoid(c + _p(2, -4, -2, sign), (r + 12, r + 12, r + 12))
    body = clipped(body, c + a * 1.0, a, offset=lambda z, y, x: np.float32(0.12) * z)  # posterior wall covers more
    body = clipped(body, _p(0, 0, hw - r - 5.5, sign), _p(0, 0, -1, sign))
    unions = [
        (body, 4.0),
        (ellipsoid(_p(6, -30, hw + 2, sign), (24, 22, 19)), 6.0),  # supra-acetabular ilium
        (_u_channel(_p(-10, 0.62 * r, hw - r - 1.5, sign), sign, 4.0, 14.0, 1.3, 14.0), 1.5),
    ]
    lateral_rim = np.array(
        [0.0, -np.sin(np.radians(p.inclination[side])), sign * np.cos(np.radians(p.inclination[side]))]
    )
    sizes = p.osteophytes[:2] if side == "R" else p.osteophytes[2:]
    for size, direction in zip(sizes, (lateral_rim, -lateral_rim), strict=True):
        if size > 0:
            spot = c + (r + 4.0) * direction + 2.5 * a
            unions.append((ellipsoid(spot, (0.8 * size, 0.6 * size, size)), 2.0))
    carves = [
        ellipsoid(c + np.array([0.0, p.roof_drop, 0.0]), (r, r, r)),
        ellipsoid(c + _p(0, 0.25 * r, -(0.45 * r + 3.0), sign), (0.55 * r,) * 3),  # fossa
    ]
    teardrop = _p(-10, 0.62 * r + 4.0, hw - r - 1.5, sign)
    return unions, carves, teardrop


# --- ischium, pubis, obturator ring -----------------------------------------------------------------


def _obturator(p: _Params, sign: float) -> tuple[list[Shape], Shape, np.ndarray]:
    """The bony ring around the obturator foramen (superior ramus, ischial body, inferior ramus,
    pubic body), the hole to carve, and points on the hole's superior border (lateral → medial)."""
    centre = _p(-12, 47, p.half_width - (45 if p.female else 43), sign)
    e1 = _unit(_p(0.8, 0, 1.0, sign))  # across the hole: lateral and posterior
    e2 = np.array([0.0, 1.0, 0.0])
    normal = np.cross(e1, e2)
    h1, h2 = p.foramen
    phi = np.linspace(0, 2 * np.pi, 33)
    c, s = np.cos(phi), np.sin(phi)
    r = (
        12.0 * np.maximum(c, 0) ** 2
        + 10.0 * np.maximum(-c, 0) ** 2
        + 8.5 * np.maximum(-s, 0) ** 2
        + 7.0 * np.maximum(s, 0) ** 2
    )
    ring_pts = centre + ((h1 + r) * c)[:, None] * e1 + ((h2 + r) * s)[:, None] * e2
    ring = tube(ring_pts, r)

    c32, e1_32, e2_32, n32 = (v.astype(np.float32) for v in (centre, e1, e2, normal))

    def hole(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        qz, qy, qx = z - c32[0], y - c32[1], x - c32[2]
        q1 = qz * e1_32[0] + qy * e1_32[1] + qx * e1_32[2]
        q2 = qz * e2_32[0] + qy * e2_32[1] + qx * e2_32[2]
        q3 = qz * n32[0] + qy * n32[1] + qx * n32[2]
        k0 = np.sqrt((q1 / np.float32(h1)) ** 2 + (q2 / np.float32(h2)) ** 2)
        k1 = np.sqrt((q1 / np.float32(h1 * h1)) ** 2 + (q2 / np.float32(h2 * h2)) ** 2)
        return np.maximum(k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6)), np.abs(q3) - np.float32(30.0))

    reach = max(h1, h2) + 32.0
    hole_shape = Shape(tuple(centre - reach), tuple(centre + reach), hole)  # type: ignore[arg-type]
    # Shenton's line's medial half is the inferior border of the superior pubic ramus: the foramen's
    # superior border from its highest point medially (not the lateral shoulder under the acetabulum,
    # which curves down away from the arc and lies below the femoral neck's continuation).
    top_phi = np.radians(np.linspace(-90, -135, 29))
    top = centre + (h1 * np.cos(top_phi))[:, None] * e1 + (h2 * np.sin(top_phi))[:, None] * e2
    return ring, hole_shape, top


def _ischium_pubis(p: _Params, sign: float) -> list[tuple[Shape, float]]:
    hw = p.half_width
    return [
        (capsule(_p(18, 20, hw - 12, sign), _p(28, 60, hw - 20, sign), 13.0, 14.0), 5.0),  # ischial body
        (ellipsoid(_p(30, 68, hw - 22, sign), (18, 15, 13)), 5.0),  # tuberosity
        (capsule(_p(45, 14, hw - 30, sign), _p(56, 22, hw - 46, sign), 5.0, 2.0), 3.0),  # ischial spine
        (ellipsoid(_p(-36, 47, p.pubic_half, sign), (11, 21, p.pubic_half)), 4.0),  # pubic body
    ]


def _posterior_ilium(p: _Params, sign: float) -> list[tuple[Shape, float]]:
    hw, k = p.half_width, p.crest / 115.0
    brim = np.array([_p(z, y, u * (1.06 if p.female and -60 < y < 12 else 1.0), sign) for z, y, u in _BRIM_ILIAC])
    return [
        (ellipsoid(_p(70, -62 * k, 58, sign), (20, 24, 11)), 5.0),  # iliac tuberosity (SI joint)
        (capsule(_p(12, -22, hw - 12, sign), _p(62, -58, 56, sign), 11.0, 12.0), 6.0),  # sciatic buttress
    ] + [(seg, 3.0) for seg in tube(brim, np.full(len(brim), 3.5))]


# --- sacrum, lumbar spine, coccyx --------------------------------------------------------------------


def _sacrum(p: _Params) -> tuple[Shape, list[Shape], float]:
    """The sacrum swept along its concave curve, its foramina (carves) and its top level."""
    y_top, y_bottom, w_top = -78.0 * p.crest / 115.0 + 10.0 * (1 - p.crest / 115.0), 22.0, p.sacrum_width
    slope = np.radians(30.0)

    def centre_z(y: np.ndarray | float) -> np.ndarray | float:
        t = y - y_top
        return 60.0 + 0.35 * t + 0.0018 * t * t

    def distance(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        t = y - np.float32(y_top)
        zc = np.float32(60.0) + np.float32(0.35) * t + np.float32(0.0018) * t * t
        w = np.maximum(np.float32(w_top) - np.float32(0.12) * t - np.float32(0.0042) * t * t, np.float32(9.0))
        d = np.maximum(np.float32(22.0) - np.float32(0.14) * t, np.float32(7.0))
        qx, qz = np.abs(x) - (w - 6.0), np.abs(z - zc) - (d - 6.0)
        rect = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qz, 0) ** 2) + np.minimum(np.maximum(qx, qz), 0) - 6.0
        top = -(z - np.float32(60.0)) * np.float32(np.sin(slope)) - (y - np.float32(y_top)) * np.float32(np.cos(slope))
        ala = np.float32(y_top + 4.0) + np.float32(0.35) * np.maximum(np.abs(x) - 18.0, 0.0) - y
        return np.maximum(np.maximum(rect, top), np.maximum(ala, y - np.float32(y_bottom)))

    shape = Shape((30.0, y_top - 20, -w_top - 2), (float(centre_z(y_bottom)) + 12, y_bottom + 2, w_top + 2), distance)
    carves = []
    for level, u, rf in ((0.23, 27.0, 4.8), (0.45, 24.0, 4.4), (0.65, 20.0, 3.8), (0.82, 16.0, 3.2)):
        yf = y_top + level * (y_bottom - y_top)
        zc = float(centre_z(yf))
        for sign in (-1.0, 1.0):
            mid = np.array([zc, yf, sign * u])
            carves.append(capsule(mid - np.array([26.0, 0, 0]), mid + np.array([2.0, 0, 0]), rf))  # anterior foramina
    return shape, carves, y_top


def _vertebra(yc: float, zc: float, tilt: float, half_w: float, reach: float) -> list[tuple[Shape, float]]:
    """A lumbar vertebra: an elliptic-cylinder body tilted by ``tilt`` (lordosis) and its posterior arch."""
    half_d, half_h = 0.72 * half_w, 13.5
    t = np.radians(tilt)
    cos_t, sin_t = np.float32(np.cos(t)), np.float32(np.sin(t))

    def body(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        dz, dy = z - np.float32(zc), y - np.float32(yc)
        zr, yr = dz * cos_t + dy * sin_t, -dz * sin_t + dy * cos_t
        k0 = np.sqrt((x / np.float32(half_w)) ** 2 + (zr / np.float32(half_d)) ** 2)
        k1 = np.sqrt((x / np.float32(half_w**2)) ** 2 + (zr / np.float32(half_d**2)) ** 2)
        d = k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))
        h = np.abs(yr) - np.float32(half_h)
        return np.sqrt(np.maximum(d, 0) ** 2 + np.maximum(h, 0) ** 2) + np.minimum(np.maximum(d, h), 0)

    reach_box = max(half_w, half_d, half_h) + 4
    parts = [
        (Shape((zc - reach_box, yc - reach_box, -reach_box), (zc + reach_box, yc + reach_box, reach_box), body), 0.0)
    ]
    zp = zc + half_d
    for sign in (-1.0, 1.0):
        parts += [
            (capsule(_p(zp - 6, yc - 4, 15, sign), _p(zp + 14, yc - 3, 16, sign), 6.5, 6.0), 3.0),  # pedicle
            (capsule(_p(zp + 10, yc - 2, 18, sign), _p(zp + 6, yc + 3, reach, sign), 6.5, 4.5), 3.0),  # transverse
            (capsule(_p(zp + 14, yc - 3, 16, sign), _p(zp + 24, yc + 4, 3, sign), 5.0, 4.5), 3.0),  # lamina
            (ellipsoid(_p(zp + 18, yc + 15, 13, sign), (7, 8, 5.5)), 3.0),  # inferior articular process
            (ellipsoid(_p(zp + 16, yc - 16, 15, sign), (7, 7, 5.5)), 3.0),  # superior articular process
        ]
    parts.append((capsule(np.array([zp + 24, yc + 2, 0.0]), np.array([zp + 48, yc + 12, 0.0]), 5.5, 5.0), 3.0))
    return parts


def _spine(p: _Params, sacrum_top: float) -> list[tuple[Shape, float]]:
    y5 = sacrum_top - 10.0 - 13.5
    y4 = y5 - 27.0 - 10.0
    parts = _vertebra(y5, 38.0 + 0.72 * p.l5_half_width, 15.0, p.l5_half_width, p.l5_half_width + 24.0)
    parts += _vertebra(y4, 33.0 + 0.72 * p.l5_half_width, 5.0, p.l5_half_width - 0.5, p.l5_half_width + 16.0)
    coccyx = [((112, 26), (111, 35), 7.0), ((109, 39), (105, 46), 5.5), ((102, 50), (97, 56), 4.0)]
    parts += [(capsule(np.array([za, ya, 0.0]), np.array([zb, yb, 0.0]), r), 0.0) for (za, ya), (zb, yb), r in coccyx]
    return parts


# --- assembly ----------------------------------------------------------------------------------------


def build_pelvis(
    grid: Grid,
    patient: Patient,
    rng: np.random.Generator,
    materials: Materials,
    *,
    osteoarthritis: bool = False,
) -> PelvisTruth:
    """Add the bony pelvis (and L4–L5, coccyx) to ``materials['bone']`` and return its landmarks.

    Deterministic for a given ``rng`` state; draws the same numbers whatever ``osteoarthritis`` is.
    Osteoarthritis lowers the acetabular roof toward the head by ~2 mm (narrower superior joint
    space for a head of the usual radius), thickens and densifies the sourcil and adds marginal
    osteophytes at the lateral and inferior acetabular rims.
    """
    p = _draw(patient, rng, osteoarthritis)
    texture = band_texture(rng, grid.spacing, p.texture_wavelength)
    start = tuple(int(v) for v in rng.integers(0, texture.shape[0], size=3))
    frame = Frame.for_patient(patient.scale, patient.pelvic_tilt, patient.pelvic_rotation, patient.offset)
    reach = p.half_width + 80.0
    canvas = Canvas(grid, frame, (-75.0, -175.0, -reach), (140.0, 100.0, reach))

    carves: list[Shape] = []
    centres, tops, teardrops = {}, {}, {}
    for side, sign in SIDES:
        wing, crest = _wing(p, sign)
        canvas.union(wing, 3.0)
        for part in crest:
            canvas.union(part, 4.0)
        for part, blend in _posterior_ilium(p, sign):
            canvas.union(part, blend)
        unions, cavity, teardrops[side] = _acetabulum(p, side, sign)
        for part, blend in unions:
            canvas.union(part, blend)
        for part, blend in _ischium_pubis(p, sign):
            canvas.union(part, blend)
        ring, hole, tops[side] = _obturator(p, sign)
        for part in ring:
            canvas.union(part, 4.0)
        carves += [*cavity, hole]
        centres[side] = _p(0, 0, p.half_width, sign)
    sacrum, foramina, sacrum_top = _sacrum(p)
    for _, sign in SIDES:  # the joint: iliac bone medial to it goes, the sacrum stops short of it
        point, normal = _p(*_SI_POINT, sign), _p(*_SI_NORMAL, sign)
        canvas.carve(clipped(box(_p(72, -68, 40, sign), (40, 36, 40)), point + p.si_gap / 2 * normal, normal))
        sacrum = clipped(sacrum, point - p.si_gap / 2 * normal, normal)
        brim = np.array([_p(z, y, u, sign) for z, y, u in _BRIM_SACRAL])
        for part in tube(brim, np.full(len(brim), 3.5)):
            canvas.union(clipped(part, point - p.si_gap / 2 * normal, normal), 3.0)
    canvas.union(sacrum, 3.0)
    for part, blend in _spine(p, sacrum_top):
        canvas.union(part, blend)
    symphysis = np.array([-36.0, 47.0, 0.0])
    carves += foramina
    carves.append(slab(symphysis, np.array([0.0, 0.0, 1.0]), p.symphysis_gap / 2, box(symphysis, (25, 40, 10))))
    for shape in carves:
        canvas.carve(shape)

    if not canvas.empty:
        bone = _density(canvas, p, texture, start, centres)
        add(materials, grid, "bone", bone, where=canvas.slices)
    s = frame.scale
    return PelvisTruth(
        acetabulum_centre={k: frame.to_world(v) for k, v in centres.items()},
        acetabulum_radius={k: p.radius[k] * s for k, _ in SIDES},
        obturator_top={k: frame.to_world(v) for k, v in tops.items()},
        symphysis_centre=frame.to_world(symphysis),
        teardrop={k: frame.to_world(v) for k, v in teardrops.items()},
    )


def _density(
    canvas: Canvas, p: _Params, texture: np.ndarray, start: tuple[int, ...], centres: dict[str, np.ndarray]
) -> np.ndarray:
    """Cortical shell + textured cancellous interior from the distance field, plus the sourcils."""
    width = np.float32(max(canvas.grid.spacing, 0.8))
    d = canvas.distance
    inner = soft_step(d + np.float32(p.cortex), width)
    cortex = soft_step(d, width) - inner
    tex = tiled(texture, d.shape, (start[0], start[1], start[2]))
    bone = np.float32(DENSITY["cortical"]) * cortex
    bone += np.float32(p.cancellous) * np.clip(1.0 + 0.45 * tex, 0.15, None) * inner
    thickness, density = p.sourcil
    scale = np.float32(canvas.frame.scale)
    for side, sign in SIDES:
        r = p.radius[side]
        c = centres[side] + np.array([0.0, p.roof_drop, 0.0])
        where = canvas.sub(tuple(c - r - 10), tuple(c + r + 10))  # type: ignore[arg-type]
        if where is None:
            continue
        z, y, x = canvas.local(where)
        dz, dy, dx = z - np.float32(c[0]), y - np.float32(c[1]), x - np.float32(c[2])
        dist = np.sqrt(dz * dz + dy * dy + dx * dx)
        up = (-dy * np.float32(0.966) + dx * np.float32(sign * 0.259)) / np.maximum(dist, np.float32(1e-3))
        weight = np.clip((up - np.float32(0.5)) / np.float32(0.3), 0.0, 1.0)
        mm = (dist - np.float32(r)) * scale
        band = np.clip(soft_step(mm - np.float32(thickness), width) - soft_step(mm - np.float32(p.cortex), width), 0, 1)
        bone[where] += np.float32(density) * band * weight * inner[where]
    return bone
