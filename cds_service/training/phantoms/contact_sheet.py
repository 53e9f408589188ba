"""Pictures of the phantoms for review (issue 27, item 7): a contact sheet of version-2 studies per
label, mimic and site, each with a magnified inset of the hip under review, and the version-1 cartoon
beside a version-2 radiograph of the same labels.

Each tile shows the study as its site's processing curve (:func:`.sites.apply_curve`) leaves it, as a
viewer displays it (MONOCHROME1 inverted back for display), with the site's name; the inset magnifies
the right hip's proximal femur (the projected femur region's box, head to below the lesser trochanter)
beside the film and outlines the fracture's truth box when there is one. Only numpy and PIL (the demo's install), so
it runs wherever the renderer does; deterministic by seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cds_service.training.phantoms import cartoon
from cds_service.training.phantoms.sites import SITES, TRAINING_SITES, apply_curve
from cds_service.training.phantoms.truth import LABELS, Phantom

#: Size (columns, rows) of one study's whole film on the sheets, and its inset's side (pixels).
TILE = (360, 293)
INSET = 293
#: Mimic rows on the contact sheet: bone and soft-tissue mimics on a normal right hip, and an implant.
MIMIC_CASES = ("skin_fold", "bowel_gas_over_neck", "physeal_scar", "herniation_pit", "osteophyte", "implant")
#: Labels compared in the cartoon-versus-version-2 picture.
COMPARED = ("none", "garden_I", "garden_IV", "ao_A2")


@dataclass(frozen=True)
class Case:
    """One study on a sheet: the right hip's label, its mimic (or ``"implant"``) and the site."""

    label: str
    mimic: str = ""
    site: str = "site-a"

    @property
    def title(self) -> str:
        what = self.mimic.replace("_", " ") if self.mimic else self.label
        return f"{what} (R) · {self.site}"


def contact_cases(sites: Sequence[str] = TRAINING_SITES) -> list[Case]:
    """Every label, then every mimic and an implant, on the right hip; the sites taken in turn."""
    cases = [Case(label) for label in LABELS] + [Case("none", mimic) for mimic in MIMIC_CASES]
    return [Case(c.label, c.mimic, sites[i % len(sites)]) for i, c in enumerate(cases)]


def render_case(case: Case, seed: int, *, spacing: float | None = None) -> Phantom:
    """The version-2 study of ``case`` (the left hip normal), deterministic by ``seed``."""
    from cds_service.training.phantoms import radiograph

    mimics: tuple[str, ...] = (f"{case.mimic}:R",) if case.mimic and case.mimic != "implant" else ()
    confounders = ("implant_right",) if case.mimic == "implant" else ()
    extra = {} if spacing is None else {"spacing": spacing}
    return radiograph.render(np.random.default_rng(seed), case.label, "none", confounders, mimics=mimics, **extra)


def displayed(image: np.ndarray, site: str) -> np.ndarray:
    """``image`` ([0, 1], 1 = bright) after the site's processing curve, as a viewer shows it (uint8)."""
    profile = SITES[site]
    return (np.clip(apply_curve(np.clip(image, 0, 1), profile.curve, profile.gamma), 0, 1) * 255).astype(np.uint8)


def _inset_box(phantom: Phantom, margin: float = 0.12) -> tuple[int, int, int, int]:
    """A square around the right proximal femur (its femur box, else the image's upper-left quarter)."""
    rows, cols = phantom.image.shape
    box = phantom.hips[0].femur_box or (cols // 8, rows // 4, cols // 2, rows * 3 // 4)
    x0, y0, x1, y1 = box
    side = int(max(x1 - x0, (y1 - y0) * 0.6) * (1 + 2 * margin))
    cx, cy = (x0 + x1) // 2, y0 + int(0.27 * (y1 - y0))  # head, neck and trochanters
    left, top = min(max(cx - side // 2, 0), cols - side), min(max(cy - side // 2, 0), rows - side)
    return left, top, left + side, top + side


def tile(phantom: Phantom, title: str, site: str) -> Image.Image:
    """One study: the whole film at :data:`TILE` and, to its right, the magnified right hip."""
    shown = displayed(phantom.image, site)
    rows, cols = shown.shape
    canvas = Image.fromarray(shown).resize(TILE, Image.Resampling.LANCZOS).convert("RGB")
    left, top, right, bottom = _inset_box(phantom)
    inset = Image.fromarray(shown[top:bottom, left:right]).resize((INSET, INSET), Image.Resampling.LANCZOS)
    inset = inset.convert("RGB")
    box = phantom.hips[0].box
    if box is not None:  # the fracture's truth box, in the inset's pixels
        k = INSET / (right - left)
        x0, y0, x1, y1 = ((box[0] - left) * k, (box[1] - top) * k, (box[2] - left) * k, (box[3] - top) * k)
        ImageDraw.Draw(inset).rectangle((x0, y0, x1, y1), outline=(255, 200, 0))
    draw = ImageDraw.Draw(canvas)
    sx, sy = TILE[0] / cols, TILE[1] / rows
    draw.rectangle((left * sx, top * sy, right * sx, bottom * sy), outline=(0, 170, 255))
    draw.rectangle((0, 0, TILE[0], 14), fill=(0, 0, 0))
    draw.text((4, 1), title, fill=(255, 255, 255))
    out = Image.new("RGB", (TILE[0] + 2 + INSET, max(TILE[1], INSET)), (40, 40, 40))
    out.paste(canvas, (0, 0))
    out.paste(inset, (TILE[0] + 2, 0))
    return out


def _grid(tiles: Sequence[Image.Image], columns: int, heading: str) -> Image.Image:
    rows = (len(tiles) + columns - 1) // columns
    width, height = tiles[0].size
    sheet = Image.new("RGB", (columns * (width + 4) + 4, rows * (height + 4) + 28), (40, 40, 40))
    ImageDraw.Draw(sheet).text((6, 6), heading, fill=(255, 255, 255))
    for i, image in enumerate(tiles):
        sheet.paste(image, (4 + (i % columns) * (width + 4), 28 + (i // columns) * (height + 4)))
    return sheet


def contact_sheet(
    path: Path, seed: int = 2027, *, sites: Sequence[str] = TRAINING_SITES, spacing: float | None = None
) -> Path:
    """Write the version-2 contact sheet (every label, mimic and an implant; sites in turn) to ``path``."""
    tiles = []
    for i, case in enumerate(contact_cases(sites)):
        tiles.append(tile(render_case(case, seed + i, spacing=spacing), case.title, case.site))
    heading = (
        f"Version-2 phantoms (3-D anatomy + exposure physics), seed {seed}: label or mimic on the patient's right"
        " hip (image left); right of each film: that proximal femur magnified, yellow = fracture truth box."
        " Synthetic, not for clinical use."
    )
    return _save(_grid(tiles, 3, heading), path)


def cartoon_versus_v2(path: Path, seed: int = 2027, *, labels: Sequence[str] = COMPARED, site: str = "site-a") -> Path:
    """Write the version-1 cartoon beside a version-2 radiograph for each of ``labels`` to ``path``."""
    tiles = []
    for i, label in enumerate(labels):
        old = cartoon.render(np.random.default_rng(seed + i), label, "none")
        tiles.append(tile(old, f"version 1 (cartoon): {label} (R)", site))
        tiles.append(tile(render_case(Case(label, site=site), seed + i), f"version 2: {label} (R)", site))
    heading = f"Cartoon (version 1, the shipped model's training data) beside version 2, same labels, seed {seed}"
    return _save(_grid(tiles, 2, heading), path)


def companion(path: Path) -> Path:
    """Where the cartoon-versus-version-2 picture goes beside the contact sheet at ``path``."""
    stem = path.stem.replace("contact_sheet", "cartoon_vs_v2")
    return path.with_name((stem if stem != path.stem else f"{stem}_cartoon_vs_v2") + path.suffix)


def write_pictures(path: Path, seed: int = 2027) -> tuple[Path, Path]:
    """Both pictures: the contact sheet at ``path`` and the cartoon comparison at :func:`companion`."""
    return contact_sheet(path, seed), cartoon_versus_v2(companion(path), seed)


def _save(sheet: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # An adaptive 128-colour palette (greys plus the outline colours): the sheet stays under ~1.5 MB.
    sheet.quantize(128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path
