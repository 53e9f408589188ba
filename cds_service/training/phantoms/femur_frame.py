"""The femur's own frame and the rigid poses that place it (and each fracture fragment) in the patient.

Femur frame (mm), the same for both sides: origin at the femoral head's centre, ``a`` toward
**posterior**, ``b`` toward **distal** (feet), ``c`` toward **lateral** (away from the midline).
Coordinates are handled as ``(a, b, c)`` triples, matching the patient frame's ``(z, y, x)`` order
(:mod:`.volume`): a right femur maps ``c`` to ``-x``, a left femur to ``+x``.

A :class:`Pose` is an orthogonal map (rotation, with a mirror for the right side) plus the patient
position of the femur frame's origin. Each fracture fragment is a rigid motion inside the femur frame,
so fragment pose = leg pose ∘ fragment motion, and a voxel is evaluated by pulling its centre back
through that pose into the fragment's undisplaced femur frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cds_service.training.phantoms.volume import Grid

Coordinates = tuple[np.ndarray, np.ndarray, np.ndarray]


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """The 3×3 rotation by ``degrees`` about the unit ``axis`` (Rodrigues' formula, right-handed in
    the coordinates given)."""
    u = np.asarray(axis, np.float64)
    u = u / np.linalg.norm(u)
    angle = np.deg2rad(degrees)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(u, u)


def rotation_toward(vector: np.ndarray, target: np.ndarray, degrees: float) -> np.ndarray:
    """The rotation that turns ``vector`` by ``degrees`` toward ``target`` (negative: away from it)."""
    axis = np.cross(vector, target)
    return rotation(axis, degrees)


@dataclass(frozen=True)
class Motion:
    """A rigid motion inside the femur frame: ``q -> R (q - pivot) + pivot + shift``."""

    matrix: np.ndarray
    pivot: np.ndarray
    shift: np.ndarray

    @staticmethod
    def identity() -> Motion:
        return Motion(np.eye(3), np.zeros(3), np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Move ``points`` ([N, 3] femur frame)."""
        return (points - self.pivot) @ self.matrix.T + self.pivot + self.shift

    def then(self, other: Motion) -> Motion:
        """This motion followed by ``other``."""
        matrix = other.matrix @ self.matrix
        offset = other.apply(self.apply(np.zeros(3))[None])[0]
        return Motion(matrix, np.zeros(3), offset)


@dataclass(frozen=True)
class Pose:
    """Femur frame → patient frame: ``x = origin + matrix @ q`` (``matrix`` orthogonal)."""

    matrix: np.ndarray
    origin: np.ndarray

    def to_patient(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] femur-frame points as patient (z, y, x) mm."""
        return np.asarray(points, np.float64) @ self.matrix.T + self.origin

    def direction(self, vector: np.ndarray) -> np.ndarray:
        """A femur-frame direction in the patient frame."""
        return self.matrix @ np.asarray(vector, np.float64)

    def moved(self, motion: Motion) -> Pose:
        """The pose of a fragment displaced by ``motion`` inside the femur frame."""
        return Pose(self.matrix @ motion.matrix, self.to_patient(motion.apply(np.zeros(3))[None])[0])

    def homogeneous(self) -> np.ndarray:
        """The 4×4 matrix mapping (a, b, c, 1) to (z, y, x, 1)."""
        out = np.eye(4)
        out[:3, :3] = self.matrix
        out[:3, 3] = self.origin
        return out

    def window(
        self, grid: Grid, low: np.ndarray, high: np.ndarray
    ) -> tuple[tuple[slice, slice, slice], Coordinates] | None:
        """The voxels of ``grid`` that the femur-frame box ``low``–``high`` can reach, with each
        voxel's centre pulled back into the femur frame (float32 arrays shaped like the window)."""
        corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
        placed = self.to_patient(corners)
        found = grid.window(tuple(placed.min(0)), tuple(placed.max(0)))
        if found is None:
            return None
        slices, (z, y, x) = found
        inverse = self.matrix.T.astype(np.float32)
        dz, dy, dx = (z - np.float32(self.origin[0]), y - np.float32(self.origin[1]), x - np.float32(self.origin[2]))
        local = tuple((inverse[i, 0] * dz + inverse[i, 1] * dy) + inverse[i, 2] * dx for i in range(3))
        return slices, (local[0], local[1], local[2])


def leg_pose(side: str, head_centre: np.ndarray, rotation_deg: float, abduction_deg: float) -> Pose:
    """The femur's pose in the patient: leg rotation about the vertical axis through the head centre
    (positive = external: the neck turns anteriorly, foreshortened on an AP view, and the lesser
    trochanter swings medially into profile), then abduction about the AP axis through the head
    centre (positive = the knee moves laterally), then the side's mirror (lateral = −x on the right)."""
    if side not in ("R", "L"):
        raise ValueError(f"side must be 'R' or 'L', not {side!r}")
    leg = rotation(np.array([1.0, 0.0, 0.0]), abduction_deg) @ rotation(np.array([0.0, 1.0, 0.0]), rotation_deg)
    mirror = np.diag([1.0, 1.0, -1.0 if side == "R" else 1.0])
    return Pose(mirror @ leg, np.asarray(head_centre, np.float64))
