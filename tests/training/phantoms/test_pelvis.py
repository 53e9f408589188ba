"""The 3-D pelvis and soft tissue of the version-2 phantoms: determinism, landmarks where the bone
puts them, symmetry and pose, the obturator foramen, soft-tissue layers and the skin-fold mimic."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cds_service.training.phantoms.patient import Patient
from cds_service.training.phantoms.pelvis import PelvisTruth, build_pelvis
from cds_service.training.phantoms.soft_tissue import SOFT_TISSUE_MIMICS, add_soft_tissue_mimic, build_soft_tissue
from cds_service.training.phantoms.volume import Grid

SPACING = 2.0
GRID = Grid((151, 151, 201), SPACING, (-150.0, -170.0, -200.0))  # z −150..150, y −170..130, x −200..200


def _patient(**changes: object) -> Patient:
    base = dict(
        sex="M",
        age=70,
        scale=1.0,
        ap_thickness=220.0,
        fat_fraction=0.3,
        bone_density=0.9,
        pelvic_tilt=0.0,
        pelvic_rotation=0.0,
        leg_rotation=(0.0, 0.0),
        leg_abduction=(0.0, 0.0),
        offset=(0.0, 0.0),
    )
    base.update(changes)
    return Patient(**base)  # type: ignore[arg-type]


def _build(patient: Patient, seed: int = 7, **kw: object) -> tuple[PelvisTruth, dict[str, np.ndarray]]:
    materials: dict[str, np.ndarray] = {}
    truth = build_pelvis(GRID, patient, np.random.default_rng(seed), materials, **kw)  # type: ignore[arg-type]
    return truth, materials


def _at(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` at patient-frame points [N, 3] (z, y, x)."""
    f = (np.atleast_2d(points) - np.array(GRID.origin)) / GRID.spacing
    i = np.floor(f).astype(int)
    a = f - i
    out = np.zeros(len(f))
    for corner in np.ndindex(2, 2, 2):
        w = np.prod(np.where(corner, a, 1 - a), axis=1)
        out += w * volume[i[:, 0] + corner[0], i[:, 1] + corner[1], i[:, 2] + corner[2]]
    return out


@pytest.fixture(scope="module")
def neutral() -> tuple[PelvisTruth, dict[str, np.ndarray]]:
    start = time.perf_counter()
    built = _build(_patient())
    print(f"\npelvis build on a {SPACING} mm grid {GRID.shape}: {time.perf_counter() - start:.2f} s")
    return built


def test_same_seed_gives_identical_volumes(neutral: tuple[PelvisTruth, dict[str, np.ndarray]]) -> None:
    truth, materials = neutral
    again, materials2 = _build(_patient())
    assert np.array_equal(materials["bone"], materials2["bone"])
    for side in ("R", "L"):
        assert np.array_equal(truth.acetabulum_centre[side], again.acetabulum_centre[side])
    _, other = _build(_patient(), seed=8)
    assert not np.array_equal(materials["bone"], other["bone"])


def test_acetabulum_centre_is_in_an_empty_socket_under_a_bony_roof(
    neutral: tuple[PelvisTruth, dict[str, np.ndarray]],
) -> None:
    truth, materials = neutral
    bone = materials["bone"]
    for side in ("R", "L"):
        c, r = truth.acetabulum_centre[side], truth.acetabulum_radius[side]
        assert 22.0 < r < 30.0
        assert _at(bone, c)[0] < 0.02  # the head's place: no bone
        assert _at(bone, c + np.array([0.0, -0.6 * r, 0.0]))[0] < 0.02
        angles = np.radians(np.linspace(-30, 30, 7))
        lateral = 1.0 if side == "L" else -1.0
        roof = np.stack([np.zeros_like(angles), -np.cos(angles), lateral * np.sin(angles)], axis=1)
        values = _at(bone, c + (r + 3.0) * roof)
        assert values.min() > 0.3, values  # the roof (sourcil) is bone all along


def test_sockets_are_symmetric_and_move_with_the_patient(neutral: tuple[PelvisTruth, dict[str, np.ndarray]]) -> None:
    truth, _ = neutral
    right, left = truth.acetabulum_centre["R"], truth.acetabulum_centre["L"]
    assert right[2] < 0 < left[2]  # the patient's right at negative x
    assert right[2] == pytest.approx(-left[2], abs=1e-6)
    assert right[:2] == pytest.approx(left[:2], abs=1e-6)
    assert 170.0 <= left[2] - right[2] <= 205.0
    moved, _ = _build(_patient(offset=(12.0, -9.0)))
    for side in ("R", "L"):
        shift = moved.acetabulum_centre[side] - truth.acetabulum_centre[side]
        assert shift == pytest.approx([0.0, -9.0, 12.0], abs=1e-6)
    turned, _ = _build(_patient(pelvic_rotation=8.0))
    assert turned.acetabulum_centre["L"][0] > turned.acetabulum_centre["R"][0] + 10  # left turned back


def test_osteoarthritis_keeps_the_draws_and_lowers_the_roof(neutral: tuple[PelvisTruth, dict[str, np.ndarray]]) -> None:
    truth, materials = neutral
    worn, worn_materials = _build(_patient(), osteoarthritis=True)
    for side in ("R", "L"):
        assert np.array_equal(worn.acetabulum_centre[side], truth.acetabulum_centre[side])
        c, r = truth.acetabulum_centre[side], truth.acetabulum_radius[side]
        probe = c + np.array([0.0, -(r - 1.0), 0.0])  # 1 mm inside the normal roof
        assert _at(worn_materials["bone"], probe)[0] > _at(materials["bone"], probe)[0] + 0.2


def test_obturator_top_is_the_upper_border_of_an_empty_foramen(
    neutral: tuple[PelvisTruth, dict[str, np.ndarray]],
) -> None:
    truth, materials = neutral
    bone = materials["bone"]
    projected = bone.sum(axis=0) * SPACING  # g/cm³·mm through z
    for side in ("R", "L"):
        points = truth.obturator_top[side]
        assert points.ndim == 2 and points.shape[1] == 3 and len(points) >= 10
        middle = points[len(points) // 5 : -len(points) // 5]
        below, above = middle + [0.0, 5.0, 0.0], middle + [0.0, -4.0, 0.0]
        assert _at(bone, below).max() < 0.05  # inside the hole
        assert _at(bone, above).min() > 0.1  # the superior ramus (cancellous bone at least)
        inner = middle.mean(axis=0) + [0.0, 10.0, 0.0]
        j, i = (int(round((inner[k] - GRID.origin[k]) / SPACING)) for k in (1, 2))
        assert projected[j, i] < 2.0  # no bone in front of or behind the foramen on the AP view
        assert 20.0 < inner[1] < 50.0 and 20.0 < abs(inner[2]) < 80.0


def test_pelvis_fills_both_sides_with_a_symphysis_gap(neutral: tuple[PelvisTruth, dict[str, np.ndarray]]) -> None:
    truth, materials = neutral
    projected = materials["bone"].sum(axis=0)
    half = projected.shape[1] // 2
    right, left = projected[:, : half - 10].sum(), projected[:, half + 11 :].sum()
    assert right > 0 and left > 0
    assert right == pytest.approx(left, rel=0.05)
    assert truth.symphysis_centre is not None
    gap = truth.symphysis_centre
    assert _at(materials["bone"], gap)[0] < 0.05
    assert _at(materials["bone"], gap + [0.0, 0.0, 8.0])[0] > 0.2


def test_soft_tissue_has_skin_fat_muscle_and_is_displaced_by_bone(
    neutral: tuple[PelvisTruth, dict[str, np.ndarray]],
) -> None:
    truth, bones = neutral
    patient = _patient()
    materials = {"bone": bones["bone"].copy()}
    start = time.perf_counter()
    build_soft_tissue(GRID, patient, np.random.default_rng(3), materials)
    print(f"\nsoft tissue on a {SPACING} mm grid: {time.perf_counter() - start:.2f} s")
    soft, fat = materials["soft"], materials["adipose"]
    row = int(round((0.0 - GRID.origin[1]) / SPACING))
    col = int(round((0.0 - GRID.origin[2]) / SPACING))
    depth = fat[:, row, col]
    assert depth.max() > 0.8  # a subcutaneous fat layer on the midline
    assert soft[:, row, col].max() > 1.0  # muscle and organs deeper
    assert soft[0, 0, 0] == 0.0 and fat[0, 0, 0] == 0.0  # air outside the body
    roof = truth.acetabulum_centre["R"] + np.array([0.0, -(truth.acetabulum_radius["R"] + 4.0), 0.0])
    bone = _at(materials["bone"], roof)[0]
    assert bone > 0.3
    assert _at(soft, roof)[0] == pytest.approx(1.05 * (1 - bone / 1.92), abs=0.08)  # bone took its share
    assert _at(soft, truth.acetabulum_centre["R"])[0] == pytest.approx(1.05, abs=0.02)  # the empty socket


def test_skin_fold_adds_a_sheet_whose_edge_runs_beyond_the_neck() -> None:
    patient = _patient()
    materials: dict[str, np.ndarray] = {}
    build_soft_tissue(GRID, patient, np.random.default_rng(3), materials)
    before = (materials["soft"] + materials["adipose"]).sum(axis=0)
    neck_centre, neck_axis = np.array([0.0, 15.0, -110.0]), np.array([0.0, 0.5, -0.866])
    add_soft_tissue_mimic("skin_fold", GRID, patient, neck_centre, neck_axis, np.random.default_rng(4), materials)
    added = (materials["soft"] + materials["adipose"]).sum(axis=0) - before
    assert added.min() >= -1e-4
    j, i = np.nonzero(added > 0.05)
    distance = np.hypot(GRID.origin[1] + SPACING * j - neck_centre[1], GRID.origin[2] + SPACING * i - neck_centre[2])
    assert distance.min() < 10.0  # across the neck
    assert distance.max() > 70.0  # and well beyond the bone


def test_bowel_gas_over_the_neck_removes_tissue_there() -> None:
    patient = _patient()
    materials: dict[str, np.ndarray] = {}
    build_soft_tissue(GRID, patient, np.random.default_rng(3), materials)
    neck_centre = np.array([0.0, 15.0, -110.0])
    j, i = (int(round((neck_centre[k] - GRID.origin[k]) / SPACING)) for k in (1, 2))
    column = (slice(None), slice(j - 3, j + 4), slice(i - 3, i + 4))
    before = materials["soft"][column].sum(axis=0) + materials["adipose"][column].sum(axis=0)
    add_soft_tissue_mimic(
        "bowel_gas_over_neck",
        GRID,
        patient,
        neck_centre,
        np.array([0.0, 0.5, -0.866]),
        np.random.default_rng(5),
        materials,
    )
    after = materials["soft"][column].sum(axis=0) + materials["adipose"][column].sum(axis=0)
    assert (after / before).min() < 0.93  # ~2 cm of gas in ~22 cm of tissue over the neck
    assert (after <= before + 1e-3).all()
    assert SOFT_TISSUE_MIMICS == ("skin_fold", "bowel_gas_over_neck")
    with pytest.raises(ValueError, match="unknown"):
        add_soft_tissue_mimic(
            "physeal_scar", GRID, patient, neck_centre, neck_centre, np.random.default_rng(0), materials
        )
