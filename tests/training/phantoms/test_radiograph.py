"""The version-2 renderer end to end: anatomy → physics → image and truth."""

import numpy as np

from cds_service.training.phantoms import SITES, radiograph, to_dataset

SPACING = 2.0  # coarse voxels keep the tests quick; the physics is the same


def _render(seed: int, right: str = "none", left: str = "none", **kwargs):
    trace: dict = {}
    phantom = radiograph.render(np.random.default_rng(seed), right, left, spacing=SPACING, trace=trace, **kwargs)
    return phantom, trace


def test_same_seed_same_image():
    a, _ = _render(5)
    b, _ = _render(5)
    c, _ = _render(6)
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    assert a.noise_applied and a.image.shape == radiograph.physics.WORK


def test_a_fracture_changes_only_its_own_side():
    normal, _ = _render(3)
    fractured, _ = _render(3, right="garden_IV")
    middle = normal.image.shape[1] // 2
    right_half = np.abs(fractured.image[:, :middle] - normal.image[:, :middle])
    left_half = np.abs(fractured.image[:, middle + 50 :] - normal.image[:, middle + 50 :])
    assert right_half.max() > 0.2
    # The same noise draw: the left half moves only through the global window and the scatter veil.
    assert left_half.max() < 0.01 and left_half.mean() < 0.05 * right_half.mean()


def test_fracture_box_holds_its_projected_surface_and_the_femur_mask_the_trochanters():
    phantom, trace = _render(4, right="ao_A2")
    geometry, femur = trace["geometry"], trace["femurs"]["R"]
    x0, y0, x1, y1 = phantom.hips[0].box
    rows, cols = geometry.project_points(femur.fracture_points)
    assert (cols >= x0).all() and (cols <= x1).all() and (rows >= y0).all() and (rows <= y1).all()
    assert phantom.hips[1].box is None
    for side, mask in zip("RL", phantom.femur_masks, strict=True):
        for point in (trace["femurs"][side].greater_trochanter, trace["femurs"][side].lesser_trochanter):
            row, col = geometry.project_points(point[None])
            assert mask[int(round(row[0])), int(round(col[0]))]


def test_femoral_heads_sit_in_their_acetabula_on_normal_hips():
    _, trace = _render(8)
    geometry, pelvis = trace["geometry"], trace["pelvis"]
    for side in "RL":
        head = np.array(geometry.project_points(trace["femurs"][side].head_centre[None]))[:, 0]
        socket = np.array(geometry.project_points(pelvis.acetabulum_centre[side][None]))[:, 0]
        offset = np.hypot(*(head - socket)) * geometry.pitch
        assert offset < 0.25 * pelvis.acetabulum_radius[side]


def _shenton_residual(trace: dict, side: str) -> float:
    """Largest distance (mm on the detector) of Shenton's line's points from one fitted circle."""
    geometry = trace["geometry"]
    points = np.concatenate([trace["pelvis"].obturator_top[side], trace["femurs"][side].inferior_neck])
    rows, cols = geometry.project_points(points)
    a = np.column_stack([cols, rows, np.ones_like(rows)])
    b = cols**2 + rows**2
    (p, q, r), *_ = np.linalg.lstsq(a, b, rcond=None)
    centre_col, centre_row = p / 2, q / 2
    radius = np.sqrt(r + centre_col**2 + centre_row**2)
    return float(np.abs(np.hypot(cols - centre_col, rows - centre_row) - radius).max() * geometry.pitch)


def test_shentons_line_is_continuous_on_a_normal_hip_and_broken_by_garden_iv():
    _, normal = _render(3)
    _, displaced = _render(3, right="garden_IV")
    assert _shenton_residual(normal, "R") < 3.0 and _shenton_residual(normal, "L") < 3.0
    assert _shenton_residual(displaced, "R") > 2 * max(_shenton_residual(normal, "R"), 2.5)


def test_the_site_encoding_adds_no_second_noise_to_a_physics_phantom():
    phantom, _ = _render(2)
    site = SITES["site-c"]
    small = site.__class__(**{**site.__dict__, "columns": site.columns // 4, "rows": site.rows // 4})
    a, _ = to_dataset(phantom, small, seed=1)
    b, _ = to_dataset(phantom, small, seed=2)
    assert a.PixelData == b.PixelData
