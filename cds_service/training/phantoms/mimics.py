"""Normal bone findings that look like a fracture line on an AP hip (negatives: never change the label).

* ``physeal_scar`` — the closed growth plate: a thin sclerotic line across the head-neck junction,
  cup-shaped (convex toward the head), running the width of the bone.
* ``herniation_pit`` — a synovial herniation pit (Pitt et al., AJR 1982): a small round lucency with a
  thin sclerotic rim in the superior-anterior femoral neck just under the cortex.
* ``osteophyte`` — a bony lip at the head-neck junction (superolateral or inferomedial, or a ring).

Each is drawn in the femur frame of the built femur's head fragment (:attr:`FemurTruth.frame`) and
only inside (pit, scar) or just outside (osteophyte) the bone.
"""

from __future__ import annotations

import numpy as np

from cds_service.training.phantoms.femur import FemurTruth, frame_pose
from cds_service.training.phantoms.femur_shape import osteophyte_distance, signed_distance
from cds_service.training.phantoms.volume import Grid, Materials, add, soft_step

F = np.float32
BONE_MIMICS = ("physeal_scar", "herniation_pit", "osteophyte")


def add_bone_mimic(kind: str, grid: Grid, femur: FemurTruth, rng: np.random.Generator, materials: Materials) -> None:
    """Add one bone mimic of ``kind`` (in :data:`BONE_MIMICS`) to ``femur``; 6 draws whatever the kind."""
    if kind not in BONE_MIMICS:
        raise ValueError(f"unknown bone mimic {kind!r}")
    g = femur.geometry
    if g is None:
        raise ValueError("the femur carries no geometry")
    u = rng.random(6)
    pose = frame_pose(femur.frame)
    s = g.scale
    edge = grid.spacing
    if kind == "physeal_scar":
        t = (0.62 + 0.12 * u[0]) * g.head_radius
        r = g.head_radius + 4 * s
        found = pose.window(grid, t * g.neck_axis - r, t * g.neck_axis + r)
        if found is None:
            return
        slices, q = found
        # a cap of a large sphere, centred down the neck: convex toward the head
        bend = (50 + 40 * u[1]) * s
        centre = (t + bend) * g.neck_axis
        plate = np.sqrt(sum((q[i] - F(centre[i])) ** 2 for i in range(3))) - F(bend)
        width = (0.6 + 0.5 * u[2]) * s
        inside = soft_step(signed_distance(g, q) + F(1.0), edge)
        add(materials, grid, "bone", F(0.35 + 0.3 * u[3]) * np.exp(-((plate / F(width)) ** 2)) * inside, slices)
        return
    if kind == "herniation_pit":
        radius = (2.5 + 2.5 * u[0]) * s
        t = (0.95 + 0.35 * u[1]) * g.head_radius
        rs, ra = g.neck_radii(t)
        around = np.deg2rad(25 + 40 * u[2])  # from superior toward anterior
        direction = np.cos(around) * g.neck_superior + np.sin(around) * g.neck_anterior
        depth = np.hypot(rs * np.cos(around), ra * np.sin(around)) - radius - (1.5 + u[3]) * s
        centre = t * g.neck_axis + depth * direction
        found = pose.window(grid, centre - radius - 3, centre + radius + 3)
        if found is None:
            return
        slices, q = found
        d = np.sqrt(sum((q[i] - F(centre[i])) ** 2 for i in range(3))) - F(radius)
        inside = soft_step(signed_distance(g, q) + F(0.5), edge)
        rim = F(0.7 + 0.4 * u[4]) * np.exp(-(((d - F(0.6)) / F(0.7 * s)) ** 2))
        window = materials.setdefault("bone", grid.empty())[slices]
        hole = soft_step(d, edge) * inside
        window -= np.minimum(window, F(0.9) * hole * window)  # the pit holds fluid, not trabeculae
        add(materials, grid, "bone", rim * inside * (1 - hole), slices)
        return
    size = (2.0 + 3.0 * u[0]) * s
    start, span = ((-60.0, 110.0), (130.0, 100.0), (0.0, 360.0))[int(u[1] * 3)]
    start += 30 * (u[2] - 0.5)
    r = g.head_radius + size + 4
    found = pose.window(grid, np.full(3, -r), np.full(3, r) + 0.9 * g.head_radius * np.abs(g.neck_axis))
    if found is None:
        return
    slices, q = found
    spur = osteophyte_distance(g, q, size, start, span)
    outside = 1 - soft_step(signed_distance(g, q), edge)
    add(materials, grid, "bone", F(0.9 + 0.4 * u[3]) * soft_step(spur, edge) * outside, slices)
