"""Soft tissue of an AP pelvis: body envelope, fat and muscle planes, bladder, bowel gas and faeces,
and the soft-tissue mimics of a fracture line (../shared/design/radiograph-realism.md, "Soft tissue
and contents" and "Mimics").

Densities in g/cm³ into ``materials['soft']`` (muscle, organs, skin, urine; 1.05) and
``materials['adipose']`` (0.95). Gas is air: it removes soft tissue and fat where it lies. Call
:func:`build_soft_tissue` after the bones: the bone and metal already in ``materials`` displace the
soft tissue they occupy (cancellous bone keeps its marrow as soft tissue).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cds_service.training.phantoms.patient import Patient
from cds_service.training.phantoms.pelvis_shapes import band_texture, tiled
from cds_service.training.phantoms.volume import DENSITY, Grid, Materials, add, soft_step

#: Soft-tissue findings that mimic a fracture line across the femoral neck (negatives for the model).
SOFT_TISSUE_MIMICS = ("skin_fold", "bowel_gas_over_neck")

_SKIN = 1.5  # mm


@dataclass(frozen=True)
class Body:
    """The body envelope (patient frame, mm): an elliptic trunk flattened on the table behind, split
    by the perineal cleft into the two thighs below the crotch; subcutaneous fat of thickness ``fat``
    under 1.5 mm of skin."""

    centre_x: float
    half_width: float  # of the trunk at the hips
    waist: float  # y above which the trunk narrows
    taper: float  # narrowing per mm above the waist (each side)
    front: float  # z of the anterior skin at the midline
    back: float  # z of the posterior skin (the table)
    centre_z: float  # of the trunk ellipse (its back is cut by the table)
    crotch: float
    fat: float
    scale: float
    offset_y: float

    def half_width_at(self, y: float) -> float:
        return self.half_width - self.taper * max(self.waist - y, 0.0)

    def front_at(self, x: float, y: float) -> float:
        """z of the anterior skin at (x, y) on the trunk (the midline's front where x is off the body)."""
        a, b = self.half_width_at(y), self.centre_z - self.front
        t = min(abs(x - self.centre_x) / a, 0.95)
        return self.centre_z - b * float(np.sqrt(1.0 - t * t))


def body_of(patient: Patient) -> Body:
    """The envelope of ``patient`` (no random draws: the habitus is in the patient)."""
    ap = patient.ap_thickness
    female = patient.sex == "F"
    half_width = (105.0 + 0.32 * ap) * (1.05 if female else 1.0)
    back = 120.0 + 0.25 * (ap - 180.0)
    front = back - ap
    centre_z = 0.5 * (front + back) + 0.075 * ap
    a, b = half_width, centre_z - front
    f = float(np.clip(patient.fat_fraction, 0.0, 0.8))
    fat = ((a + b) - np.sqrt((a + b) ** 2 - 4.0 * f * a * b)) / 2.0  # (a − t)(b − t) = (1 − f)·a·b
    ox, oy = patient.offset
    return Body(
        centre_x=float(ox),
        half_width=half_width,
        waist=float(oy) - 60.0 * patient.scale,
        taper=0.4 if female else 0.3,
        front=front,
        back=back,
        centre_z=centre_z,
        crotch=float(oy) + 85.0 * patient.scale,
        fat=float(fat),
        scale=patient.scale,
        offset_y=float(oy),
    )


def _ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (Quílez's bound)."""
    k0 = np.sqrt((u / np.float32(a)) ** 2 + (v / np.float32(b)) ** 2)
    k1 = np.sqrt((u / np.float32(a * a)) ** 2 + (v / np.float32(b * b)) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))


def _section(body: Body, y: float, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The body's signed distance over one transverse row (z [nz, 1], x [1, nx]) at height ``y``."""
    dx = x - np.float32(body.centre_x)
    table = z - np.float32(body.back)
    trunk = np.maximum(
        _ellipse(dx, z - np.float32(body.centre_z), body.half_width_at(y), body.centre_z - body.front), table
    )
    gap = np.float32(0.6 * (y - body.crotch)) - np.abs(dx)  # the perineal cleft between the thighs
    return np.maximum(trunk, gap) if y > body.crotch else trunk


def _envelope(grid: Grid, body: Body, materials: Materials) -> None:
    """Skin, subcutaneous fat and muscle, row by row (rows with the same section are computed once)."""
    z, y, x = grid.axes()
    z2, x2 = z[:, :, 0], x[0]
    width = np.float32(max(grid.spacing, 0.8))
    cache: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {}
    for j, yj in enumerate(y.ravel()):
        yv = float(yj)
        key = (round(body.half_width_at(yv), 1), float(np.clip(round(yv - body.crotch, 1), 0, 100)))
        if key not in cache:
            d = _section(body, yv, z2, x2)
            inside = soft_step(d, width)
            under_skin = soft_step(d + np.float32(_SKIN), width)
            muscle = soft_step(d + np.float32(body.fat + _SKIN), width)
            soft = np.float32(DENSITY["soft"]) * (inside - under_skin + muscle)
            fat = np.float32(DENSITY["adipose"]) * (under_skin - muscle)
            cache[key] = (soft[:, None, :], fat[:, None, :])
        soft_row, fat_row = cache[key]
        where = (slice(None), slice(j, j + 1), slice(None))
        add(materials, grid, "soft", soft_row, where)
        add(materials, grid, "adipose", fat_row, where)


def _displace_by_bone(materials: Materials) -> None:
    """Bone and metal take the place of the soft tissue in their voxels."""
    solid = None
    for name, full in (("bone", DENSITY["cortical"]), ("metal", DENSITY["titanium"])):
        if name in materials:
            share = materials[name] / np.float32(full)
            solid = share if solid is None else solid + share
    if solid is None:
        return
    keep = 1.0 - np.clip(solid, 0.0, 1.0)
    for name in ("soft", "adipose"):
        materials[name] *= keep


def _world(patient: Patient, z: float, y: float, x: float) -> np.ndarray:
    """A point given in the neutral pelvis frame, scaled and offset with the patient."""
    return np.array([z * patient.scale, y * patient.scale + patient.offset[1], x * patient.scale + patient.offset[0]])


def _window(grid: Grid, centre: np.ndarray, reach: np.ndarray):  # type: ignore[no-untyped-def]
    return grid.window(tuple(centre - reach), tuple(centre + reach))  # type: ignore[arg-type]


def _ellipsoid(
    grid: Grid, centre: np.ndarray, radii: np.ndarray, margin: float
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """The window reaching ``margin`` mm beyond an axis-aligned ellipsoid (None when it misses the
    grid) and, there, the distance to its surface: the scaled radius minus one, in mm of the
    smallest semi-axis (negative inside)."""
    win = _window(grid, centre, radii + margin)
    if win is None:
        return None
    where, (z, y, x) = win
    q = [
        (z - np.float32(centre[0])) / np.float32(radii[0]),
        (y - np.float32(centre[1])) / np.float32(radii[1]),
        (x - np.float32(centre[2])) / np.float32(radii[2]),
    ]
    return where, (np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2) - 1.0) * np.float32(radii.min())


def _swap_to_fat(materials: Materials, where: tuple[slice, slice, slice], share: np.ndarray) -> None:
    """Turn ``share`` of the soft tissue in ``where`` into fat (a fat plane between muscles)."""
    moved = materials["soft"][where] * share
    materials["soft"][where] -= moved
    materials["adipose"][where] += moved * np.float32(DENSITY["adipose"] / DENSITY["soft"])


def _remove(materials: Materials, where: tuple[slice, slice, slice], gas: np.ndarray) -> None:
    """Gas: air in place of soft tissue and fat."""
    for name in ("soft", "adipose"):
        if name in materials:
            materials[name][where] *= 1.0 - gas


def _fat_planes(grid: Grid, patient: Patient, materials: Materials) -> None:
    """Thin fat sheets seen edge-on: the psoas margins, the obturator internus plane medial to each
    acetabulum, the gluteal planes lateral to the ilia and the pericapsular fat over each hip."""
    hw = 97.0 if patient.sex == "F" else 89.0
    sheets = (  # (y, u) start, (y, u) end, z range, half-thickness
        ((-175.0, 42.0), (30.0, 72.0), (-10.0, 60.0), 2.0),  # psoas
        ((-5.0, hw - 40.0), (60.0, hw - 46.0), (-15.0, 35.0), 1.6),  # obturator internus
        ((-120.0, hw + 62.0), (10.0, hw + 45.0), (20.0, 90.0), 2.0),  # gluteal
        ((-40.0, hw + 14.0), (45.0, hw + 40.0), (-30.0, 15.0), 1.5),  # pericapsular
    )
    width = np.float32(max(grid.spacing, 0.8))
    for sign in (-1.0, 1.0):
        for (y0, u0), (y1, u1), (z0, z1), half in sheets:
            a = _world(patient, 0.5 * (z0 + z1), y0, sign * u0)
            b = _world(patient, 0.5 * (z0 + z1), y1, sign * u1)
            direction = (b - a) / np.linalg.norm(b - a)
            normal = np.array([0.0, -direction[2], direction[1]])
            length = float(np.linalg.norm(b - a))
            zh = 0.5 * (z1 - z0) * patient.scale
            centre = 0.5 * (a + b)
            win = _window(grid, centre, np.array([zh + 2, abs(b[1] - a[1]) / 2 + 4, abs(b[2] - a[2]) / 2 + 4]))
            if win is None:
                continue
            where, (z, y, x) = win
            qz, qy, qx = z - np.float32(a[0]), y - np.float32(a[1]), x - np.float32(a[2])
            along = qy * np.float32(direction[1]) + qx * np.float32(direction[2])
            across = np.abs(qy * np.float32(normal[1]) + qx * np.float32(normal[2])) - np.float32(half)
            d = np.maximum(
                np.maximum(across, np.abs(along - np.float32(length / 2)) - np.float32(length / 2)),
                np.abs(qz) - np.float32(zh),
            )
            _swap_to_fat(materials, where, 0.6 * soft_step(d, width))


def _bladder(grid: Grid, patient: Patient, rng: np.random.Generator, materials: Materials) -> None:
    """A urine-filled bladder behind the symphysis, outlined by perivesical fat."""
    fill = float(rng.uniform(0.5, 1.1))
    centre = _world(patient, -8.0, 28.0 - 6.0 * fill, 0.0)
    radii = np.array([30.0, 26.0, 42.0]) * fill * patient.scale
    found = _ellipsoid(grid, centre, radii, 8.0)
    if found is None:
        return
    where, d = found
    width = np.float32(max(grid.spacing, 0.8))
    rim = soft_step(d - np.float32(4.0), width) - soft_step(d, width)
    _swap_to_fat(materials, where, 0.7 * rim)


def _gas_pocket(
    grid: Grid,
    centre: np.ndarray,
    radii: np.ndarray,
    mottled: bool,
    texture: np.ndarray,
    start: np.ndarray,
    materials: Materials,
) -> None:
    found = _ellipsoid(grid, centre, radii, 3.0)
    if found is None:
        return
    where, d = found
    gas = soft_step(d, np.float32(max(grid.spacing, 0.8)))
    shape = gas.shape
    if mottled:  # faeces: bubbles of gas in a soft-tissue mass
        origin = (int(start[0]) + where[0].start, int(start[1]) + where[1].start, int(start[2]) + where[2].start)
        gas = gas * np.clip(0.35 + 0.45 * tiled(texture, shape, origin), 0.0, 0.95)
    else:
        gas = gas * np.float32(0.95)
    _remove(materials, where, gas)


def _bowel(grid: Grid, patient: Patient, rng: np.random.Generator, materials: Materials, body: Body) -> None:
    """Gas and faeces: rectosigmoid over the sacrum, caecum and descending colon in the iliac fossae,
    small-bowel loops over the wings, and sometimes a loop over a hip. Every pocket draws its numbers
    whether or not it is present, so the draws never shift."""
    texture = band_texture(rng, grid.spacing, 5.0, period=64.0)
    start = rng.integers(0, texture.shape[0], size=3)
    hip_side = 1.0 if rng.random() < 0.5 else -1.0
    regions = (  # (presence, z range, y range, x range, radius range, faeces probability)
        (0.8, (45, 70), (-80, 0), (-30, 30), (10, 22), 0.6),
        (0.8, (45, 70), (-80, 0), (-30, 30), (8, 18), 0.6),
        (0.7, (-30, 20), (-120, -50), (-100, -55), (14, 28), 0.7),
        (0.6, (-30, 20), (-130, -60), (55, 100), (12, 24), 0.6),
        (0.5, (-60, 0), (-160, -70), (-120, 120), (6, 14), 0.1),
        (0.5, (-60, 0), (-160, -70), (-120, 120), (6, 14), 0.1),
        (0.5, (-60, 0), (-160, -70), (-120, 120), (6, 14), 0.1),
        (0.15, (-60, -30), (-20, 30), (60 * hip_side, 110 * hip_side), (10, 18), 0.3),
    )
    for presence, zr, yr, xr, rr, faeces in regions:
        present = rng.random() < presence
        point = np.array([rng.uniform(*zr), rng.uniform(*yr), rng.uniform(*sorted(xr))])
        radii = rng.uniform(*rr, size=3)
        mottled = rng.random() < faeces
        if not present:
            continue
        centre = _world(patient, *point)
        front = body.front_at(float(centre[2]), float(centre[1]))
        centre[0] = max(centre[0], front + radii[0] * patient.scale + 6.0)  # inside the body
        _gas_pocket(grid, centre, radii * patient.scale, mottled, texture, start, materials)


def build_soft_tissue(grid: Grid, patient: Patient, rng: np.random.Generator, materials: Materials) -> None:
    """Fill ``materials`` with the soft tissue of ``patient``: envelope (skin, subcutaneous fat of
    ``patient.fat_fraction``, muscle), the bone already present displacing it, fat planes between
    the muscles, the bladder and bowel gas/faeces. Deterministic for a given ``rng`` state."""
    body = body_of(patient)
    _envelope(grid, body, materials)
    _displace_by_bone(materials)
    _fat_planes(grid, patient, materials)
    _bladder(grid, patient, rng, materials)
    _bowel(grid, patient, rng, materials, body)


def add_soft_tissue_mimic(
    kind: str,
    grid: Grid,
    patient: Patient,
    neck_centre: np.ndarray,
    neck_axis: np.ndarray,
    rng: np.random.Generator,
    materials: Materials,
) -> None:
    """Add a soft-tissue finding whose edge crosses the femoral neck on the AP view.

    ``skin_fold``: a sheet of doubled skin and fat lying behind the patient, its sharp edge a line
    through the neck's projection, roughly across the neck, running 90–150 mm each way (well beyond
    the bone's outline) and fading over 25–60 mm on one side. ``bowel_gas_over_neck``: a gas-filled
    (sometimes faecal) bowel loop in front of the hip, projected over the neck. ``neck_centre`` and
    ``neck_axis`` are (z, y, x) in the patient frame (:class:`FemurTruth`'s fields). Call after
    :func:`build_soft_tissue` (the gas removes the tissue it displaces).
    """
    if kind not in SOFT_TISSUE_MIMICS:
        raise ValueError(f"unknown soft-tissue mimic {kind!r}; expected one of {SOFT_TISSUE_MIMICS}")
    body = body_of(patient)
    centre = np.asarray(neck_centre, np.float64)
    axis = np.asarray(neck_axis, np.float64)
    if kind == "skin_fold":
        _skin_fold(grid, body, centre, axis, rng, materials)
    else:
        if "soft" not in materials:
            raise ValueError("bowel gas needs the soft tissue: call build_soft_tissue first")
        _gas_over_neck(grid, patient, body, centre, axis, rng, materials)


def _skin_fold(
    grid: Grid, body: Body, centre: np.ndarray, axis: np.ndarray, rng: np.random.Generator, materials: Materials
) -> None:
    turn = np.radians(float(rng.normal(0.0, 20.0)))
    thickness = float(rng.uniform(6.0, 14.0))
    fade = float(rng.uniform(25.0, 60.0))
    half_length = float(rng.uniform(90.0, 150.0))
    side = 1.0 if rng.random() < 0.5 else -1.0
    projected = np.array([axis[1], axis[2]])
    projected = projected / (np.linalg.norm(projected) or 1.0)
    across = np.array([-projected[1], projected[0]])  # perpendicular to the neck on the image
    c, s = np.cos(turn), np.sin(turn)
    line = np.array([c * across[0] - s * across[1], s * across[0] + c * across[1]])
    normal = side * np.array([-line[1], line[0]])
    z_top = float(grid.origin[0] + grid.spacing * (grid.shape[0] - 1))
    z_mid = min(body.back - 12.0 - thickness / 2, z_top - thickness)
    reach = half_length + 3.0 * fade
    win = grid.window(
        (z_mid - thickness, centre[1] - reach, centre[2] - reach),
        (z_mid + thickness, centre[1] + reach, centre[2] + reach),
    )
    if win is None:
        return
    where, (z, y, x) = win
    dy, dx = y - np.float32(centre[1]), x - np.float32(centre[2])
    t = dy * np.float32(line[0]) + dx * np.float32(line[1])
    d = np.maximum(dy * np.float32(normal[0]) + dx * np.float32(normal[1]), 0.0)
    taper = np.clip((np.float32(half_length) - np.abs(t)) / np.float32(20.0), 0.0, 1.0)
    sheet = np.float32(thickness) * (1.0 - np.exp(-d / np.float32(0.8))) * np.exp(-d / np.float32(fade)) * taper
    width = np.float32(max(grid.spacing, 0.8))
    fill = soft_step(np.abs(z - np.float32(z_mid)) - sheet / 2, width) * np.clip(sheet / width, 0.0, 1.0)
    add(materials, grid, "adipose", np.float32(0.75 * DENSITY["adipose"]) * fill, where)
    add(materials, grid, "soft", np.float32(0.25 * DENSITY["soft"]) * fill, where)


def _gas_over_neck(
    grid: Grid,
    patient: Patient,
    body: Body,
    centre: np.ndarray,
    axis: np.ndarray,
    rng: np.random.Generator,
    materials: Materials,
) -> None:
    shift = rng.normal(0.0, 6.0, size=2)
    angle = float(rng.uniform(0.0, np.pi))
    radius = float(rng.uniform(9.0, 15.0))
    length = float(rng.uniform(20.0, 45.0))
    mottled = rng.random() < 0.3
    texture = band_texture(rng, grid.spacing, 5.0, period=48.0)
    start = rng.integers(0, texture.shape[0], size=3)
    y0, x0 = centre[1] + shift[0], centre[2] + shift[1]
    front = body.front_at(float(x0), float(y0))
    z0 = max(front + body.fat + _SKIN + radius + 3.0, centre[0] - 55.0)  # under the abdominal wall's fat
    direction = np.array([np.sin(angle), np.cos(angle)])
    for step in (-0.5, 0.0, 0.5):  # a short loop: three overlapping ellipsoids along its course
        point = np.array([z0, y0 + step * length * direction[0], x0 + step * length * direction[1]])
        radii = np.array([radius * 0.9, radius, radius])
        _gas_pocket(grid, point, radii, mottled, texture, start, materials)
