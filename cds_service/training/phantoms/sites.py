"""Site profiles: how each (simulated) hospital acquires and stores its AP pelvis radiographs."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from pydicom.uid import JPEG2000Lossless, RLELossless


@dataclass(frozen=True)
class SiteProfile:
    """How one (simulated) hospital stores its AP pelvis radiographs."""

    name: str
    columns: int
    rows: int
    bits: int
    photometric: str
    modality: str
    gamma: float
    compressed: bool
    noise: float
    transfer_syntax: str = RLELossless  # used when ``compressed``: RLE or JPEG 2000 lossless
    curve: str = "gamma"  # display/processing curve: "gamma" (x**gamma), "sigmoid" or "log"
    sharpen: float = 0.0  # unsharp-mask gain (vendor edge enhancement); 0 = none


def apply_curve(image: np.ndarray, curve: str, gamma: float) -> np.ndarray:
    """A site's processing curve on intensities in [0, 1] (output in [0, 1])."""
    if curve == "gamma":
        return image**gamma
    if curve == "sigmoid":  # film-like S-curve; ``gamma`` sets its steepness
        lo, hi = 1 / (1 + math.exp(5 * gamma * 0.5)), 1 / (1 + math.exp(-5 * gamma * 0.5))
        return (1 / (1 + np.exp(-5 * gamma * (image - 0.5))) - lo) / (hi - lo)
    if curve == "log":  # logarithmic compression of the bright end; ``gamma`` sets its strength
        return np.log1p(image * 9 * gamma) / math.log1p(9 * gamma)
    raise ValueError(f"unknown curve {curve!r}")


def draw_acquisition(base: SiteProfile, rng: np.random.Generator) -> SiteProfile:
    """One study's acquisition, drawn around its site's profile (training and internal test sets).

    Detector size ±20 % (aspect kept within ±10 %), bit depth, processing curve, curve strength and
    quantum noise vary per study, so the model cannot key on one site's look.
    """
    size = rng.uniform(0.8, 1.2)
    aspect = rng.uniform(0.9, 1.1)
    return dataclasses.replace(
        base,
        columns=int(base.columns * size),
        rows=int(base.rows * size * aspect),
        bits=int(rng.choice([8, 10, 12, 14, 16])),
        curve=str(rng.choice(["gamma", "gamma", "sigmoid", "log"])),
        gamma=base.gamma * rng.uniform(0.8, 1.25),
        noise=base.noise * rng.uniform(0.5, 1.6),
    )


SITES = {
    # After Study A's three sites (4892×4020 JPEG, 3451×2836 DICOM, 2039×1380 JPEG) …
    "site-a": SiteProfile("site-a", 4892, 4020, 12, "MONOCHROME2", "DX", 1.0, True, 0.020, JPEG2000Lossless),
    "site-b": SiteProfile("site-b", 3451, 2836, 10, "MONOCHROME1", "CR", 0.8, True, 0.030),
    "site-c": SiteProfile("site-c", 2039, 1380, 8, "MONOCHROME2", "CR", 1.25, False, 0.025),
    # … two more of our own: a DR room with a film-like S-curve, a CR reader with log compression …
    "site-d": SiteProfile("site-d", 3072, 2560, 14, "MONOCHROME2", "DX", 1.0, True, 0.025, curve="sigmoid"),
    "site-e": SiteProfile("site-e", 2370, 1770, 12, "MONOCHROME1", "CR", 1.0, True, 0.03, curve="log"),
    # … and two external sites never used in training: a 16-bit MONOCHROME1 detector with its own
    # curve, and a square detector whose vendor processing sharpens edges (unsharp mask), which no
    # training profile does.
    "external": SiteProfile("external", 3000, 2500, 16, "MONOCHROME1", "DX", 0.9, True, 0.035),
    "external-b": SiteProfile("external-b", 2048, 2048, 12, "MONOCHROME2", "DX", 1.1, True, 0.03, sharpen=1.2),
}
TRAINING_SITES = ("site-a", "site-b", "site-c", "site-d", "site-e")
EXTERNAL_SITES = ("external", "external-b")
