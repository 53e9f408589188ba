"""The version-2 proximal femur: anatomy, fracture fragments, implants and mimics (3-D, before projection)."""

import numpy as np
import pytest

from cds_service.training.phantoms.femur import build_femur
from cds_service.training.phantoms.femur_frame import leg_pose
from cds_service.training.phantoms.femur_shape import draw_geometry
from cds_service.training.phantoms.fractures import draw_fracture
from cds_service.training.phantoms.implants import IMPLANTS
from cds_service.training.phantoms.mimics import BONE_MIMICS, add_bone_mimic
from cds_service.training.phantoms.patient import Patient, draw_patient
from cds_service.training.phantoms.volume import Grid

CENTRE = np.array([0.0, 0.0, -90.0])  # right acetabulum (z, y, x) mm
RADIUS = 26.0
GRID = Grid(shape=(107, 174, 100), spacing=1.5, origin=(-80.0, -60.0, -170.0))


def _patient(rotation: float = 0.0) -> Patient:
    base = draw_patient(np.random.default_rng(3))
    return Patient(**{**base.__dict__, "leg_rotation": (rotation, 0.0), "leg_abduction": (0.0, 0.0)})


def _build(label: str, seed: int = 5, grid: Grid = GRID, rotation: float = 0.0, **kwargs):
    materials: dict[str, np.ndarray] = {}
    truth = build_femur(
        grid, _patient(rotation), "R", CENTRE, RADIUS, label, np.random.default_rng(seed), materials, **kwargs
    )
    return truth, materials


def _index(grid: Grid, point: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round((p - o) / grid.spacing)) for p, o in zip(point, grid.origin, strict=True))


def _shaft_shift(a: np.ndarray, b: np.ndarray, start: int) -> float:
    """Best vertical shift (mm, negative = b lies proximal of a) of the per-row bone width profile."""
    pa, pb = (np.count_nonzero(v > 0.3, axis=(0, 2))[start:].astype(float) for v in (a, b))
    shifts = range(-25, 26)
    cost = [np.abs(pa[25 + s : len(pa) - 25 + s] - pb[25 : len(pb) - 25]).mean() for s in shifts]
    return -list(shifts)[int(np.argmin(cost))] * GRID.spacing


def test_same_seed_gives_the_same_volume_and_truth():
    one, m1 = _build("garden_III")
    two, m2 = _build("garden_III")
    _, m3 = _build("garden_III", seed=6)
    np.testing.assert_array_equal(m1["bone"], m2["bone"])
    np.testing.assert_array_equal(one.fracture_points, two.fracture_points)
    assert np.abs(m1["bone"] - m3["bone"]).max() > 0.1
    assert m1["bone"].dtype == np.float32


def test_a_normal_head_sits_in_its_acetabulum():
    truth, m = _build("none")
    np.testing.assert_allclose(truth.head_centre, CENTRE, atol=1e-6)
    assert RADIUS - 5.5 < truth.head_radius < RADIUS - 2.5  # joint space 3–5 mm
    bone = m["bone"]
    assert bone[_index(GRID, CENTRE)] > 0.05  # cancellous bone at the head centre
    # nothing of the femur on the acetabular roof just outside the socket
    roof = CENTRE + np.array([0.0, -(RADIUS + 1.5), 0.0])
    assert bone[_index(GRID, roof)] == 0
    assert truth.site == "none" and truth.fracture_points is None


def test_the_region_is_the_proximal_femur_from_the_bone():
    truth, m = _build("none", rotation=20.0)
    region = truth.region
    for landmark in (truth.head_centre, truth.greater_trochanter, truth.lesser_trochanter):
        assert region[_index(GRID, landmark)]
    assert (m["bone"][region] > 0.05).mean() > 0.95  # built from bone, not a box
    # not the acetabulum: a shell just outside the socket over its roof and medial wall
    angles = np.linspace(0, np.pi, 25)
    for r in (RADIUS + 2, RADIUS + 5):
        for a in angles:
            for direction in ([0, -np.cos(a), -np.sin(a)], [np.sin(a), -np.cos(a), 0]):
                point = CENTRE + r * np.array(direction) * [1, 1, -1]  # roof and medial (+x) wall
                assert not region[_index(GRID, point)]
    rows = np.nonzero(region.any(axis=(0, 2)))[0]
    lowest = GRID.origin[1] + GRID.spacing * rows.max()
    assert truth.lesser_trochanter[1] + 40 < lowest < truth.lesser_trochanter[1] + 56


def test_garden_iv_shortens_the_shaft_and_garden_ii_does_not():
    _, normal = _build("none")
    _, two = _build("garden_II")
    four_truth, four = _build("garden_IV")
    start = int((CENTRE[1] + 30 - GRID.origin[1]) / GRID.spacing)
    assert abs(_shaft_shift(normal["bone"], two["bone"], start)) <= GRID.spacing
    assert _shaft_shift(normal["bone"], four["bone"], start) <= -8.0  # migrated proximally (−y)
    np.testing.assert_allclose(four_truth.head_centre, CENTRE, atol=1e-6)  # the head stays in the socket
    assert four_truth.site == "femoral_neck"


def test_an_invisible_fracture_keeps_its_displacement_and_differs_only_at_the_line():
    shown, m_shown = _build("garden_II")
    hidden, m_hidden = _build("garden_II", fracture_visible=False)
    _, m_none = _build("none")
    np.testing.assert_array_equal(shown.region, hidden.region)
    np.testing.assert_array_equal(shown.fracture_points, hidden.fracture_points)
    # an undisplaced fracture at zero contrast is the intact bone
    assert np.abs(m_hidden["bone"] - m_none["bone"]).max() < 1e-3
    diff = np.argwhere(np.abs(m_shown["bone"] - m_hidden["bone"]) > 0.05)
    assert len(diff) > 50
    where = np.asarray(GRID.origin) + GRID.spacing * diff
    nearest = np.min(np.linalg.norm(where[:, None, :] - shown.fracture_points[None, ::4, :], axis=2), axis=1)
    assert nearest.max() < 5.0
    # the displaced kind: the same displacement, the lucent gap gone
    shown4, _ = _build("garden_IV")
    hidden4, _ = _build("garden_IV", fracture_visible=False)
    np.testing.assert_allclose(shown4.neck_centre, hidden4.neck_centre)
    assert shown4.displacement == hidden4.displacement


def test_inferior_neck_points_lie_on_bone():
    grid = Grid(shape=(160, 180, 150), spacing=1.0, origin=(-80.0, -60.0, -170.0))
    for label in ("none", "garden_IV"):
        truth, m = _build(label, grid=grid)
        assert len(truth.inferior_neck) >= 12
        values = np.array([m["bone"][_index(grid, p)] for p in truth.inferior_neck])
        assert (values > 0.3).mean() > 0.9


def test_trochanteric_a2_has_several_fracture_surfaces():
    g = draw_geometry(_patient(), RADIUS, np.random.default_rng(1))
    assert len(draw_fracture("ao_A2", g, np.random.default_rng(2)).surfaces) > 1
    assert len(draw_fracture("ao_A1", g, np.random.default_rng(2)).surfaces) == 1
    truth, _ = _build("ao_A2")
    points = truth.fracture_points - truth.fracture_points.mean(0)
    assert np.linalg.svd(points, compute_uv=False)[2] > 0.1 * np.sqrt(len(points))  # not one plane
    assert truth.site == "trochanteric"


def test_neck_and_trochanteric_fractures_sit_where_their_names_say():
    neck, _ = _build("garden_II")
    troch, _ = _build("ao_A1")
    head_to_neck = np.linalg.norm(neck.fracture_points - neck.head_centre, axis=1).mean()
    head_to_troch = np.linalg.norm(troch.fracture_points - troch.head_centre, axis=1).mean()
    assert head_to_neck < neck.head_radius + 25 < head_to_troch


def test_each_implant_is_metal_and_arthroplasty_replaces_the_head():
    for kind in IMPLANTS:
        truth, m = _build("none", implant=kind)
        assert m["metal"].max() > 4.0 and truth.implant == kind
    truth, m = _build("none", implant="arthroplasty")
    centre = _index(GRID, CENTRE)
    assert m["metal"][centre] > 3.0 and m["bone"][centre] < 0.01  # metal head, native head resected
    with pytest.raises(ValueError):
        _build("garden_I", implant="dhs")


def test_mimics_change_bone_near_the_neck_and_not_the_truth():
    for kind in BONE_MIMICS:
        truth, m = _build("none")
        before = m["bone"].copy()
        add_bone_mimic(kind, GRID, truth, np.random.default_rng(9), m)
        changed = np.argwhere(np.abs(m["bone"] - before) > 0.02)
        assert len(changed), kind
        where = np.asarray(GRID.origin) + GRID.spacing * changed
        assert np.linalg.norm(where - truth.head_centre, axis=1).max() < truth.head_radius + 30, kind
        assert truth.site == "none" and truth.fracture_points is None
        assert (m["bone"] >= 0).all()


def test_external_rotation_brings_the_lesser_trochanter_into_profile():
    internal, _ = _build("none", rotation=-15.0)
    external, _ = _build("none", rotation=25.0)
    # right hip: medial is +x; the lesser trochanter swings medially with external rotation
    assert external.lesser_trochanter[2] > internal.lesser_trochanter[2] + 3
    pose = leg_pose("R", CENTRE, 25.0, 0.0)
    assert np.linalg.det(pose.matrix) == pytest.approx(-1.0)  # the right side is mirrored
