"""The radiograph physics on simple volumes: slabs of water, bone rods and a metal bead."""

import dataclasses

import numpy as np
import pytest

from cds_service.training.phantoms import physics
from cds_service.training.phantoms.volume import Grid, soft_step

GEOMETRY = physics.Geometry(sid=1100.0, detector_z=160.0, centre=(-20.0, 5.0))
# A plain exposure: no texture, grid lines, glare or equalisation to blur what a test measures.
PLAIN = physics.Technique(
    quanta=2e4, texture=0.0, grid_lines=0.0, glare=0.0, equalisation=0.0, collimation=(15.0, 15.0, 15.0, 15.0)
)


def _grid(spacing: float = 2.0) -> Grid:
    return GEOMETRY.field_grid(spacing, (-110.0, 110.0))


def _body(grid: Grid) -> dict[str, np.ndarray]:
    """An elliptic water-like cylinder along y (the body), 360 × 200 mm."""
    z, y, x = grid.axes()
    inside = soft_step(np.hypot(x / 180, z / 100) * 100 - 100, 1.0) * np.ones_like(y)
    return {"soft": (1.05 * inside).astype(np.float32)}


def _with_rod_and_bead(grid: Grid) -> tuple[dict[str, np.ndarray], np.ndarray]:
    materials = _body(grid)
    z, y, x = grid.axes()
    rod = soft_step(np.hypot(x + 90, z - 10) - 12, grid.spacing) * np.ones_like(y)
    materials["bone"] = (1.5 * rod).astype(np.float32)
    bead_centre = np.array([-60.0, 50.0, 70.0])
    bead = soft_step(
        np.sqrt((z - bead_centre[0]) ** 2 + (y - bead_centre[1]) ** 2 + (x - bead_centre[2]) ** 2) - 4, 1.0
    )
    materials["metal"] = (7.9 * bead).astype(np.float32)
    return materials, bead_centre


def _expose(materials, grid, technique=PLAIN, seed=0):
    integrals = physics.project(materials, grid, GEOMETRY)
    return physics.expose(integrals, GEOMETRY, technique, np.random.default_rng(seed))


def test_same_seed_same_image_and_another_seed_other_noise():
    grid = _grid()
    materials, _ = _with_rod_and_bead(grid)
    a, b, c = (_expose(materials, grid, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_quantum_noise_variance_grows_with_signal_as_poisson():
    rows, cols = GEOMETRY.shape[0] // physics.RASTER, GEOMETRY.shape[1] // physics.RASTER
    soft = np.full((rows, cols), 10.0, np.float32)
    soft[:, cols // 2 :] = 25.0  # thicker: fewer quanta
    technique = dataclasses.replace(PLAIN, scatter_to_primary=0.0, heel=0.0, blur_sigma=0.0)
    counts = physics.expose({"soft": soft}, GEOMETRY, technique, np.random.default_rng(1)).counts
    thin, thick = counts[300:700, 150:500], counts[300:700, 800:1150]

    def noise_variance(region):  # from neighbours' differences: the inverse square's slow slope drops out
        return np.diff(region.astype(np.float64), axis=1).var() / 2

    assert thin.mean() > 5 * thick.mean()
    assert noise_variance(thin) > 5 * noise_variance(thick)  # noise grows with signal …
    for region in (thin, thick):  # … as Poisson: variance equals the mean
        assert noise_variance(region) / region.mean() == pytest.approx(1.0, rel=0.05)


def test_magnification_from_the_geometry():
    cy, cx = GEOMETRY.centre
    near, far = 100.0, -100.0  # z: near the detector, far from it (toward the source)
    rows, cols = GEOMETRY.project_points(np.array([[near, cy + 40, cx + 80], [far, cy + 40, cx + 80]]))
    centre_row, centre_col = GEOMETRY.project_points(np.array([[0.0, cy, cx]]))
    spread = np.hypot(rows - centre_row, cols - centre_col) * GEOMETRY.pitch  # mm on the detector
    assert spread[1] > spread[0]
    for z, distance in zip((near, far), spread, strict=True):
        expected = np.hypot(40, 80) * GEOMETRY.sid / (z - GEOMETRY.source_z)
        assert distance == pytest.approx(expected, rel=1e-6)


def test_beam_hardening_lowers_the_effective_attenuation_of_thick_water():
    thin, thick = physics.effective_mu("water", 1.0, 80.0), physics.effective_mu("water", 25.0, 80.0)
    assert thick < 0.9 * thin
    # Between the textbook values at the spectrum's mean energy before and after 25 cm of water.
    assert 0.18 < thick < 0.26 < thin < 0.40


def test_spectrum_hardens_with_filtration_and_kvp():
    def mean(kvp, al):
        energies, fractions = physics.spectrum(kvp, al)
        return float((energies * fractions).sum())

    assert mean(80, 3.5) > mean(80, 2.5) and mean(85, 2.5) > mean(75, 2.5)
    assert 40 < mean(80, 2.5) < 46  # SpekPy: 42.9 keV with 2.5 mm Al


@pytest.mark.parametrize("toward_feet", [True, False])
def test_heel_effect_dims_the_anode_side(toward_feet):
    grid = _grid()
    technique = dataclasses.replace(PLAIN, heel=0.2, anode_toward_feet=toward_feet)
    counts = _expose(_body(grid), grid, technique).counts
    head, feet = counts[100:300, 500:800].mean(), counts[750:950, 500:800].mean()
    assert (feet < 0.9 * head) if toward_feet else (head < 0.9 * feet)


def test_bone_rod_is_brighter_than_soft_tissue():
    grid = _grid()
    materials, _ = _with_rod_and_bead(grid)
    image = _expose(materials, grid).image
    _, rod_col = GEOMETRY.project_points(np.array([[10.0, 0.0, -90.0]]))
    col = int(round(rod_col[0]))
    rod, beside = image[300:400, col - 5 : col + 5].mean(), image[300:400, col + 60 : col + 70].mean()
    assert rod > beside + 0.05


def test_collimation_leaves_unexposed_borders():
    grid = _grid()
    exposure = _expose(_body(grid), grid, dataclasses.replace(PLAIN, collimation=(30.0, 30.0, 40.0, 40.0)))
    border = exposure.counts[:, :60]  # 20 mm of the 40 mm left border
    inside = exposure.counts[400:600, 200:260]
    assert border.mean() < 0.25 * inside.mean()
    assert np.all(exposure.image[:, :60] == 1.0) and exposure.image[400:600, 200:260].mean() < 0.95
    assert not exposure.field[:, :100].any() and exposure.field[500, 500]


def test_projected_points_land_where_a_bead_appears():
    grid = _grid(1.0)
    materials, bead = _with_rod_and_bead(grid)
    counts = _expose(materials, grid, dataclasses.replace(PLAIN, scatter_to_primary=0.3)).counts
    row, col = GEOMETRY.project_points(bead[None])
    r0, c0 = int(row[0]) - 40, int(col[0]) - 40
    window = counts[r0 : r0 + 80, c0 : c0 + 80]
    shadow = window < 0.5 * np.median(window)  # the bead stops most of the beam
    ys, xs = np.nonzero(shadow)
    assert 50 < ys.size < 800
    assert abs(r0 + ys.mean() - row[0]) < 1.0 and abs(c0 + xs.mean() - col[0]) < 1.0


def test_projected_mask_covers_the_projected_object():
    grid = _grid()
    materials, bead = _with_rod_and_bead(grid)
    mask = physics.project_mask(materials["metal"] > 0.5, grid, GEOMETRY)
    row, col = GEOMETRY.project_points(bead[None])
    assert mask[int(round(row[0])), int(round(col[0]))]
    # 8 mm across at a magnification of about 1.25: about 30 working pixels across, not the whole image.
    assert 300 < mask.sum() < 1500


def test_depth_planes_match_the_slice_by_slice_cone_beam():
    grid = _grid(1.0)
    materials, _ = _with_rod_and_bead(grid)
    exact = physics.project(materials, grid, GEOMETRY, plane_spacing=grid.spacing)
    planes = physics.project(materials, grid, GEOMETRY)
    for name in ("soft", "bone"):
        assert np.abs(planes[name] - exact[name]).max() < 0.01 * exact[name].max()
