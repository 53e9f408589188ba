"""One study's patient and positioning, drawn once per study and shared by every part of the anatomy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Patient:
    """Who is imaged and how they lie. Angles in degrees, lengths in mm.

    ``bone_density`` scales cancellous density and cortical thickness (1 = young adult; 0.6 = marked
    osteoporosis, Singh index about 2); ``leg_rotation`` is per hip (positive = external rotation,
    which shortens the neck on an AP view and shows the lesser trochanter; 15–20° internal is the
    textbook position, many patients with a fracture lie externally rotated).
    """

    sex: str  # "F" or "M"
    age: int
    scale: float  # overall size (1 = textbook adult of that sex)
    ap_thickness: float  # soft-tissue AP thickness at the hips (180–300 mm)
    fat_fraction: float  # share of the soft-tissue envelope that is subcutaneous fat (0.15–0.5)
    bone_density: float
    pelvic_tilt: float  # rotation about x (anterior tilt positive)
    pelvic_rotation: float  # rotation about y (the obturator foramina become asymmetric)
    leg_rotation: tuple[float, float]  # (right, left), positive = external
    leg_abduction: tuple[float, float]  # (right, left)
    offset: tuple[float, float]  # (x, y) of the pelvis from the field centre (off-centre positioning)


def draw_patient(rng: np.random.Generator) -> Patient:
    """A patient as they come to a hip radiograph: mostly older, more women, varied habitus and positioning."""
    sex = "F" if rng.random() < 0.65 else "M"
    age = int(np.clip(rng.normal(76, 12), 40, 100))
    osteoporosis = np.clip((age - 50) / 50, 0, 1) * (0.35 if sex == "F" else 0.25)
    return Patient(
        sex=sex,
        age=age,
        scale=float(rng.normal(0.94 if sex == "F" else 1.0, 0.04)),
        ap_thickness=float(np.clip(rng.normal(225, 30), 170, 310)),
        fat_fraction=float(rng.uniform(0.15, 0.5)),
        bone_density=float(np.clip(1 - osteoporosis + rng.normal(0, 0.08), 0.5, 1.1)),
        pelvic_tilt=float(rng.normal(0, 5)),
        pelvic_rotation=float(rng.normal(0, 3)),
        leg_rotation=(float(rng.normal(-10, 10)), float(rng.normal(-10, 10))),
        leg_abduction=(float(rng.normal(0, 3)), float(rng.normal(0, 3))),
        offset=(float(rng.normal(0, 12)), float(rng.normal(0, 15))),
    )
