"""Signed-distance building blocks of the pelvis: its pose, a canvas that composes shapes, and a texture.

Every shape is written in the **pelvis frame** (the patient frame of :mod:`.volume` for a neutral,
unit-scale patient: mm, arrays ``[z, y, x]``) as a signed distance (negative inside). The
:class:`Frame` carries the patient's scale, pelvic tilt, rotation and offset; the :class:`Canvas`
maps each shape's own bounding box into the grid, evaluates the shape there only (the realism
note's cost rule: build each primitive inside its window) and composes it into one distance field
by (smooth) union or carving. Distances are approximate (Quílez's bounds for ellipsoids and round
cones), which is enough for soft partial-volume edges at 0.75–2 mm voxels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cds_service.training.phantoms.volume import Grid

#: A shape's signed distance (pelvis-frame mm) at pelvis-frame coordinates z, y, x.
DistanceFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

_FAR = 1.0e3


@dataclass(frozen=True)
class Shape:
    """A signed-distance shape and the pelvis-frame box (z, y, x mm) outside which it is positive."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]
    distance: DistanceFn


def _rotation(tilt_deg: float, rotation_deg: float) -> np.ndarray:
    """Tilt about x (anterior tilt positive: the crest moves anteriorly, the pubis posteriorly and
    down), then rotation about y (positive: the patient's left side turns posteriorly), as a matrix
    acting on (z, y, x) column vectors."""
    a, b = np.radians(tilt_deg), np.radians(rotation_deg)
    tilt = np.array([[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    turn = np.array([[np.cos(b), 0.0, np.sin(b)], [0.0, 1.0, 0.0], [-np.sin(b), 0.0, np.cos(b)]])
    return turn @ tilt


@dataclass(frozen=True)
class Frame:
    """Pelvis frame → patient frame: ``world = shift + scale·pivot + R·(scale·(p − pivot))``."""

    rotation: np.ndarray
    scale: float
    pivot: np.ndarray
    shift: np.ndarray

    @classmethod
    def for_patient(cls, scale: float, tilt: float, rotation: float, offset: tuple[float, float]) -> Frame:
        """The pose of a patient's pelvis, rotated about a point in the true pelvis."""
        return cls(
            rotation=_rotation(tilt, rotation),
            scale=float(scale),
            pivot=np.array([30.0, -30.0, 0.0]),
            shift=np.array([0.0, float(offset[1]), float(offset[0])]),
        )

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Pelvis-frame points [..., 3] (z, y, x) → patient-frame points, float64."""
        p = np.asarray(points, np.float64)
        return self.shift + self.scale * self.pivot + self.scale * (p - self.pivot) @ self.rotation.T

    def world_box(
        self, low: tuple[float, float, float], high: tuple[float, float, float]
    ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """The patient-frame box that holds the pelvis-frame box ``low``–``high``."""
        corners = np.array(
            [[c0, c1, c2] for c0 in (low[0], high[0]) for c1 in (low[1], high[1]) for c2 in (low[2], high[2])]
        )
        w = self.to_world(corners)
        lo, hi = w.min(axis=0), w.max(axis=0)
        return (float(lo[0]), float(lo[1]), float(lo[2])), (float(hi[0]), float(hi[1]), float(hi[2]))

    def local(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient-frame axes (broadcastable 1-D, as :meth:`Grid.axes`) → pelvis-frame coordinates."""
        centre = self.shift + self.scale * self.pivot
        dz = (z - np.float32(centre[0])) / np.float32(self.scale)
        dy = (y - np.float32(centre[1])) / np.float32(self.scale)
        dx = (x - np.float32(centre[2])) / np.float32(self.scale)
        r = self.rotation.astype(np.float32)
        out = []
        for i in range(3):
            plane = r[0, i] * dz + r[1, i] * dy  # [nz, ny, 1]: cheap before broadcasting over x
            out.append(plane + (r[2, i] * dx + np.float32(self.pivot[i])))
        return out[0], out[1], out[2]


class Canvas:
    """One distance field over a window of the grid, composed shape by shape (patient-frame mm)."""

    def __init__(self, grid: Grid, frame: Frame, low: tuple[float, float, float], high: tuple[float, float, float]):
        self.grid = grid
        self.frame = frame
        window = grid.window(*frame.world_box(low, high))
        self.empty = window is None
        if window is None:
            self.slices = (slice(0, 0), slice(0, 0), slice(0, 0))
            self.axes = (np.zeros(0, np.float32),) * 3
            self.distance = np.zeros((0, 0, 0), np.float32)
            return
        self.slices, axes = window
        self.axes = (axes[0].ravel(), axes[1].ravel(), axes[2].ravel())
        self.distance = np.full(tuple(len(a) for a in self.axes), _FAR, np.float32)

    def sub(
        self, low: tuple[float, float, float], high: tuple[float, float, float]
    ) -> tuple[slice, slice, slice] | None:
        """The canvas slices covering the pelvis-frame box ``low``–``high``, or None."""
        if self.empty:
            return None
        lo, hi = self.frame.world_box(low, high)
        out = []
        for axis, a, b in zip(self.axes, lo, hi, strict=True):
            start = max(0, int(np.floor((a - axis[0]) / self.grid.spacing)))
            stop = min(len(axis), int(np.ceil((b - axis[0]) / self.grid.spacing)) + 1)
            if start >= stop:
                return None
            out.append(slice(start, stop))
        return out[0], out[1], out[2]

    def local(self, where: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pelvis-frame coordinates of the canvas voxels ``where``."""
        z, y, x = (a[s] for a, s in zip(self.axes, where, strict=True))
        return self.frame.local(z.reshape(-1, 1, 1), y.reshape(1, -1, 1), x.reshape(1, 1, -1))

    def _evaluate(self, shape: Shape) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        where = self.sub(shape.low, shape.high)
        if where is None:
            return None
        return where, shape.distance(*self.local(where)) * np.float32(self.frame.scale)

    def union(self, shape: Shape, blend: float = 0.0) -> None:
        """Add ``shape``; ``blend`` (mm) rounds the joint (polynomial smooth minimum), 0 = hard union."""
        got = self._evaluate(shape)
        if got is None:
            return
        where, d = got
        current = self.distance[where]
        if blend <= 0:
            np.minimum(current, d, out=current)
            return
        h = np.clip(0.5 + 0.5 * (current - d) / blend, 0.0, 1.0)
        self.distance[where] = current + h * (d - current) - blend * h * (1.0 - h)

    def carve(self, shape: Shape) -> None:
        """Remove ``shape`` from the bone."""
        got = self._evaluate(shape)
        if got is None:
            return
        where, d = got
        current = self.distance[where]
        np.maximum(current, -d, out=current)


# --- shapes (pelvis frame) -------------------------------------------------------------------------


def _box_around(points: np.ndarray, margin: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    lo, hi = points.min(axis=0) - margin, points.max(axis=0) + margin
    return (float(lo[0]), float(lo[1]), float(lo[2])), (float(hi[0]), float(hi[1]), float(hi[2]))


def capsule(a: np.ndarray, b: np.ndarray, ra: float, rb: float | None = None) -> Shape:
    """A segment from ``a`` to ``b`` with radius ``ra`` tapering linearly to ``rb`` (a round cone)."""
    rb = ra if rb is None else rb
    a32, ba = np.asarray(a, np.float32), (np.asarray(b, np.float32) - np.asarray(a, np.float32))
    length2 = float(ba @ ba) or 1e-6
    ra32, dr = np.float32(ra), np.float32(rb - ra)

    def distance(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        pz, py, px = z - a32[0], y - a32[1], x - a32[2]
        t = np.clip((pz * ba[0] + py * ba[1] + px * ba[2]) / np.float32(length2), 0.0, 1.0)
        qz, qy, qx = pz - t * ba[0], py - t * ba[1], px - t * ba[2]
        return np.sqrt(qz * qz + qy * qy + qx * qx) - (ra32 + t * dr)

    low, high = _box_around(np.array([a, b], np.float64), max(ra, rb) + 1.0)
    return Shape(low, high, distance)


def tube(points: np.ndarray, radii: np.ndarray) -> list[Shape]:
    """A tube along a polyline, one round cone per segment (each evaluated in its own window)."""
    return [capsule(points[i], points[i + 1], float(radii[i]), float(radii[i + 1])) for i in range(len(points) - 1)]


def ellipsoid(centre: np.ndarray, radii: tuple[float, float, float], axes: np.ndarray | None = None) -> Shape:
    """An ellipsoid with semi-axes ``radii`` along the rows of ``axes`` (default z, y, x)."""
    c = np.asarray(centre, np.float32)
    m = np.eye(3, dtype=np.float32) if axes is None else np.asarray(axes, np.float32)
    r = np.asarray(radii, np.float32)

    def distance(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        pz, py, px = z - c[0], y - c[1], x - c[2]
        q = [(m[i, 0] * pz + m[i, 1] * py + m[i, 2] * px) for i in range(3)]
        k0 = np.sqrt(sum((q[i] / r[i]) ** 2 for i in range(3)))
        k1 = np.sqrt(sum((q[i] / (r[i] * r[i])) ** 2 for i in range(3)))
        return k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))

    reach = float(r.max()) + 1.0
    return Shape(tuple(float(v - reach) for v in c), tuple(float(v + reach) for v in c), distance)  # type: ignore[arg-type]


def clipped(shape: Shape, point: np.ndarray, normal: np.ndarray, *, offset: DistanceFn | None = None) -> Shape:
    """``shape`` cut by the half-space on the far side of ``normal`` from ``point`` (kept: (p − point)·n ≤ 0,
    or ≤ ``offset(p)`` when given, for a curved cut)."""
    p0 = np.asarray(point, np.float32)
    n = np.asarray(normal, np.float32) / np.float32(np.linalg.norm(normal))

    def distance(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        plane = (z - p0[0]) * n[0] + (y - p0[1]) * n[1] + (x - p0[2]) * n[2]
        if offset is not None:
            plane = plane - offset(z, y, x)
        return np.maximum(shape.distance(z, y, x), plane)

    return Shape(shape.low, shape.high, distance)


def box(centre: np.ndarray, half: tuple[float, float, float], rounding: float = 0.0) -> Shape:
    """An axis-aligned (pelvis frame) box with rounded edges."""
    c = np.asarray(centre, np.float32)
    h = np.asarray(half, np.float32) - np.float32(rounding)

    def distance(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        qz, qy, qx = np.abs(z - c[0]) - h[0], np.abs(y - c[1]) - h[1], np.abs(x - c[2]) - h[2]
        outside = np.sqrt(np.maximum(qz, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qx, 0) ** 2)
        return outside + np.minimum(np.maximum(np.maximum(qz, qy), qx), 0.0) - np.float32(rounding)

    reach = np.asarray(half) + 1.0
    return Shape(tuple(float(v) for v in c - reach), tuple(float(v) for v in c + reach), distance)  # type: ignore[arg-type]


def slab(point: np.ndarray, normal: np.ndarray, half_width: float, limit: Shape) -> Shape:
    """The slab |(p − point)·n| < half_width, inside ``limit`` only (a joint gap to carve)."""
    p0 = np.asarray(point, np.float32)
    n = np.asarray(normal, np.float32) / np.float32(np.linalg.norm(normal))

    def distance(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        plane = np.abs((z - p0[0]) * n[0] + (y - p0[1]) * n[1] + (x - p0[2]) * n[2]) - np.float32(half_width)
        return np.maximum(plane, limit.distance(z, y, x))

    return Shape(limit.low, limit.high, distance)


class Table2D:
    """A 2-D function sampled on a regular 1 mm-ish raster, read back bilinearly."""

    def __init__(self, u0: float, v0: float, step: float, values: np.ndarray):
        self.u0, self.v0, self.step = float(u0), float(v0), float(step)
        self.values = np.asarray(values, np.float32)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        nu, nv = self.values.shape
        fu = np.clip((u - np.float32(self.u0)) / np.float32(self.step), 0, nu - 1.001)
        fv = np.clip((v - np.float32(self.v0)) / np.float32(self.step), 0, nv - 1.001)
        iu, iv = fu.astype(np.int32), fv.astype(np.int32)
        a, b = fu - iu, fv - iv
        t = self.values
        top = t[iu, iv] + a * (t[iu + 1, iv] - t[iu, iv])
        bottom = t[iu, iv + 1] + a * (t[iu + 1, iv + 1] - t[iu, iv + 1])
        return top + b * (bottom - top)


def polygon_distance(vertices: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed 2-D distance to a closed polygon (negative inside), for points ``u``, ``v`` of any shape."""
    u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
    d2 = np.full(u.shape, np.inf)
    inside = np.zeros(u.shape, bool)
    n = len(vertices)
    for i in range(n):
        (au, av), (bu, bv) = vertices[i], vertices[(i + 1) % n]
        eu, ev = bu - au, bv - av
        wu, wv = u - au, v - av
        t = np.clip((wu * eu + wv * ev) / (eu * eu + ev * ev), 0.0, 1.0)
        d2 = np.minimum(d2, (wu - t * eu) ** 2 + (wv - t * ev) ** 2)
        crosses = (av > v) != (bv > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = au + (v - av) * eu / np.where(ev == 0, 1e-12, ev)
        inside ^= crosses & (u < at)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d2)


def band_texture(rng: np.random.Generator, spacing: float, wavelength: float, period: float = 80.0) -> np.ndarray:
    """A periodic 3-D band-limited Gaussian texture (unit variance) of period ``period`` mm: trabecular
    detail at ``wavelength`` mm plus a quarter-frequency marrow mottle. Tile it with a random offset."""
    n = max(16, int(np.ceil(period / spacing / 2)) * 2)
    white = rng.standard_normal((n, n, n), dtype=np.float32)
    f = np.fft.fftfreq(n, spacing).astype(np.float32)
    fr = np.fft.rfftfreq(n, spacing).astype(np.float32)
    radius = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + fr[None, None, :] ** 2)
    f0 = np.float32(1.0 / wavelength)
    gain = np.exp(-(((radius - f0) / (0.5 * f0)) ** 2)) + 0.6 * np.exp(-((radius / (0.25 * f0)) ** 2))
    gain[0, 0, 0] = 0.0
    tex = np.fft.irfftn(np.fft.rfftn(white) * gain, s=(n, n, n), axes=(0, 1, 2)).astype(np.float32)
    return tex / np.float32(tex.std() + 1e-12)


def tiled(tile: np.ndarray, shape: tuple[int, int, int], start: tuple[int, int, int]) -> np.ndarray:
    """``tile`` repeated over ``shape`` beginning at index ``start`` (the random offset)."""
    out = tile
    for axis in range(3):
        idx = (start[axis] + np.arange(shape[axis])) % tile.shape[axis]
        out = out.take(idx, axis=axis)
    return out
