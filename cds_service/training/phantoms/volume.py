"""The 3-D frame every part of the anatomy is built in, and the material densities it fills.

Patient frame (millimetres), the radiograph's view of the supine patient from the X-ray tube:

* ``x`` — across the patient, increasing toward the **patient's left** (the image's columns: the
  patient's right hip is on the image's left, as radiographs are displayed); ``x = 0`` is the midline;
* ``y`` — head to foot, increasing toward the **feet** (the image's rows); ``y = 0`` is the level of
  the femoral head centres of a neutral patient;
* ``z`` — depth, increasing from the **anterior** skin toward the **posterior** (the tube is in front,
  the table and detector behind: an AP projection); ``z = 0`` is the coronal plane through the
  femoral head centres.

Arrays are indexed ``[z, y, x]`` so that a projection sums over the first axis. Each material volume
holds that material's **density in g/cm³** per voxel (partial volumes allowed, soft edges expected:
a 1 mm voxel cannot show a 2 mm cortex with a hard threshold). The physics (:mod:`.physics`) turns
each material's line integral (g/cm²) into attenuation with that material's mass attenuation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Materials of the anatomy, each with its own mass attenuation in the physics. ``soft`` is muscle,
#: organs and skin (water-like, 1.05 g/cm³), ``adipose`` fat (0.95), ``bone`` cortical bone
#: (1.92 g/cm³ where fully cortical; cancellous bone is the same material at a lower density,
#: 0.15–0.45 g/cm³ of bone plus marrow counted as ``adipose``/``soft``), ``metal`` implants
#: (titanium or cobalt-chromium, 4.5–8.3), ``calcium`` vascular calcification.
MATERIALS = ("soft", "adipose", "bone", "metal")

DENSITY = {"soft": 1.05, "adipose": 0.95, "cortical": 1.92, "titanium": 4.5, "cocr": 8.3}


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid in the patient frame: ``shape`` (nz, ny, nx), ``spacing`` mm, and the
    patient-frame position (z, y, x) in mm of voxel [0, 0, 0]'s centre."""

    shape: tuple[int, int, int]
    spacing: float
    origin: tuple[float, float, float]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The voxel centres along z, y and x (mm), float32, shaped to broadcast as [z, y, x]."""
        z0, y0, x0 = self.origin
        nz, ny, nx = self.shape
        s = self.spacing
        return (
            (z0 + s * np.arange(nz, dtype=np.float32)).reshape(nz, 1, 1),
            (y0 + s * np.arange(ny, dtype=np.float32)).reshape(1, ny, 1),
            (x0 + s * np.arange(nx, dtype=np.float32)).reshape(1, 1, nx),
        )

    def empty(self) -> np.ndarray:
        return np.zeros(self.shape, np.float32)

    def window(
        self, low: tuple[float, float, float], high: tuple[float, float, float]
    ) -> tuple[tuple[slice, slice, slice], tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """The voxels inside the patient-frame box ``low``–``high`` (z, y, x mm): their index slices
        and their centres (broadcastable axes as :meth:`axes`), or None when the box misses the grid.

        Build each part only inside its own bounding box: a full 1 mm grid is tens of millions of
        voxels, and evaluating every primitive everywhere is what makes a volume slow.
        """
        slices = []
        for lo, hi, origin, n in zip(low, high, self.origin, self.shape, strict=True):
            start = max(0, int(np.floor((lo - origin) / self.spacing)))
            stop = min(n, int(np.ceil((hi - origin) / self.spacing)) + 1)
            if start >= stop:
                return None
            slices.append(slice(start, stop))
        z, y, x = self.axes()
        return (slices[0], slices[1], slices[2]), (z[slices[0]], y[:, slices[1]], x[:, :, slices[2]])


#: Density volumes by material name (a subset of :data:`MATERIALS`), each shaped ``grid.shape``.
Materials = dict[str, np.ndarray]


def add(
    materials: Materials,
    grid: Grid,
    name: str,
    density: np.ndarray,
    where: tuple[slice, slice, slice] | None = None,
) -> None:
    """Add ``density`` (g/cm³) to material ``name``, over the whole grid or the window ``where``
    (:meth:`Grid.window`'s slices, ``density`` shaped to that window)."""
    if name not in MATERIALS:
        raise ValueError(f"unknown material {name!r}")
    if name not in materials:
        materials[name] = grid.empty()
    if where is None:
        materials[name] += density
    else:
        materials[name][where] += density


def soft_step(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """1 inside (signed distance < 0), 0 outside, linear over ``width`` mm across the surface: the
    partial-volume edge of a surface at voxel scale."""
    return np.clip(0.5 - signed_distance / width, 0.0, 1.0)
