"""Hip-crop datasets from phantoms, through the serving preprocessing (decode → LUT → split → resize).

Each phantom study is rendered, encoded as DICOM with a site profile (at a reduced size: the model
only sees S×S crops, and every step of the stored-image path is still exercised), decoded with
:func:`cds_service.dicom.decode.decode_dataset` and split with
:func:`cds_service.dicom.preprocess.split_hips` — the very functions serving uses — so training and
serving cannot drift. Fracture boxes are mapped into crop coordinates with the same split and mirroring.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cds_service.dicom.decode import decode_dataset
from cds_service.dicom.preprocess import HipCrop, split_hips
from cds_service.training.phantoms import (
    GARDEN,
    LABELS,
    SITES,
    TRAINING_SITES,
    HipTruth,
    draw_acquisition,
    random_confounders,
    renderer,
    to_dataset,
)


@dataclass
class CropSet:
    """Hip crops with their ground truth (first axis = crop)."""

    images: np.ndarray  # uint8 [N, S, S]
    label: np.ndarray  # int [N], index into phantoms.LABELS
    boxes: np.ndarray  # float [N, 4] (x0, y0, x1, y1) in crop pixels; NaN when no fracture
    site: np.ndarray  # str [N]
    femur: np.ndarray  # float [N, 4] proximal-femur box in crop pixels
    # int [N]: the study each crop comes from (its two hips share one), for study-clustered intervals.
    # Sets made before it was kept: consecutive pairs, as generate and from_folder write them.
    study: np.ndarray = None  # type: ignore[assignment]
    # uint8 [N, S/4, S/4]: the proximal femur's own projected region (head to below the lesser
    # trochanter, both trochanters) in crop coordinates at a quarter of the crop's size, where the
    # renderer knows it (generator 2); empty [0, …] otherwise. Localisation and the heat-map guidance
    # read it instead of the femur box.
    femur_mask: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.study is None:
            self.study = np.arange(len(self.label)) // 2
        if self.femur_mask is None:
            self.femur_mask = np.zeros((0, 1, 1), np.uint8)

    @property
    def has_femur_masks(self) -> bool:
        return len(self.femur_mask) == len(self.label) and self.femur_mask.shape[1] > 1

    @property
    def fractured(self) -> np.ndarray:
        return self.label != 0

    @property
    def garden(self) -> np.ndarray:
        """Garden stage index 0–3, or -1 when the crop is not a femoral-neck fracture."""
        return np.array([GARDEN.get(LABELS[i], -1) for i in self.label])

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, mask: np.ndarray) -> CropSet:
        masks = self.femur_mask[mask] if self.has_femur_masks else None
        return CropSet(
            self.images[mask],
            self.label[mask],
            self.boxes[mask],
            self.site[mask],
            self.femur[mask],
            self.study[mask],
            masks,
        )

    @classmethod
    def concatenate(cls, parts: list[CropSet]) -> CropSet:
        """One set of the crops of ``parts``, in order (their ``study`` numbers kept as they are)."""
        return cls(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.label for p in parts]),
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.site for p in parts]),
            np.concatenate([p.femur for p in parts]),
            np.concatenate([p.study for p in parts]),
            _masks([p for p in parts if len(p)]),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> CropSet:
        with np.load(path, allow_pickle=False) as data:
            values = {field.name: data[field.name] for field in dataclasses.fields(cls) if field.name in data}
        values.setdefault("femur", np.full((len(values["label"]), 4), np.nan, np.float32))  # older files
        return cls(**values)


def crop_box(box: tuple[int, int, int, int], crop: HipCrop, size: int) -> np.ndarray:
    """A stored-image box in the crop's pixel coordinates (same split, mirroring and resize)."""
    x0, y0, x1, y1 = crop.box
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    bx0, bx1 = box[0] - x0, box[2] - x0
    if crop.mirrored:
        bx0, bx1 = (x1 - x0) - bx1, (x1 - x0) - bx0
    return np.array([bx0 * sx, (box[1] - y0) * sy, bx1 * sx, (box[3] - y0) * sy], dtype=np.float32).clip(0, size)


#: The share of generator-2 training and test studies with one fracture mimic drawn on a hip without a
#: fracture (a skin fold, bowel gas, physeal scar, herniation pit or osteophyte): real films are full of
#: lines that are not fractures, and a model that never saw one calls every line a fracture.
MIMIC_SHARE = 0.35


def all_mimics() -> tuple[str, ...]:
    """Every mimic kind generator 2 draws (bone mimics, then soft-tissue ones)."""
    from cds_service.training.phantoms.mimics import BONE_MIMICS
    from cds_service.training.phantoms.soft_tissue import SOFT_TISSUE_MIMICS

    return (*BONE_MIMICS, *SOFT_TISSUE_MIMICS)


def random_mimics(rng: np.random.Generator, right: str, left: str) -> tuple[str, ...]:
    """At most one mimic per study, on a hip without a fracture ("kind:R"/"kind:L"), in MIMIC_SHARE of them."""
    if rng.random() >= MIMIC_SHARE:
        return ()
    sides = [side for side, label in (("R", right), ("L", left)) if label == "none"]
    kinds = all_mimics()
    return (f"{kinds[int(rng.integers(len(kinds)))]}:{sides[int(rng.integers(len(sides)))]}",)


def crop_mask(mask: np.ndarray, crop: HipCrop, stored: tuple[int, int], size: int) -> np.ndarray:
    """A working-resolution mask in a crop's coordinates at ``size`` px: the crop's box (stored-image
    pixels of a ``stored`` (rows, columns) image) mapped back to the mask, mirrored like the crop."""
    from PIL import Image

    sy, sx = mask.shape[0] / stored[0], mask.shape[1] / stored[1]
    x0, y0, x1, y1 = crop.box
    part = mask[
        int(y0 * sy) : max(int(y0 * sy) + 1, int(round(y1 * sy))),
        int(x0 * sx) : max(int(x0 * sx) + 1, int(round(x1 * sx))),
    ]
    if crop.mirrored:
        part = part[:, ::-1]
    image = Image.fromarray(part.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(image) >= 128).astype(np.uint8)


def _labels(rng: np.random.Generator, p_fracture: float) -> tuple[str, str]:
    if rng.random() >= p_fracture:
        return "none", "none"
    label = str(rng.choice(LABELS[1:], p=[0.15, 0.15, 0.15, 0.15, 0.14, 0.13, 0.13]))
    return (label, "none") if rng.random() < 0.5 else ("none", label)


@dataclass(frozen=True)
class _Chunk:
    """Studies ``start`` … ``start + count - 1`` of one :func:`generate` call (a worker's job)."""

    seed: int
    start: int
    count: int
    sites: tuple[str, ...]
    size: int
    scale: float
    p_fracture: float
    swap_marker: bool
    compression: bool
    vary: bool
    fracture_lines: bool
    only: tuple[str, ...] | None
    generator: int = 1
    mimics: tuple[str, ...] = ()
    random_mimics: bool = True


#: Phantom generator versions: 1 the 2-D cartoon (:mod:`phantoms.cartoon`), 2 radiographs rendered from
#: 3-D anatomy (:mod:`phantoms.radiograph`); :func:`phantoms.renderer` gives each one's ``render``.
GENERATORS = (1, 2)


def _chunk(job: _Chunk) -> CropSet:
    seed, sites, size, scale, vary = job.seed, job.sites, job.size, job.scale, job.vary
    images, labels, boxes, site_names, femurs, studies, masks = [], [], [], [], [], [], []
    draw = renderer(job.generator)
    for index in range(job.start, job.start + job.count):
        rng = np.random.default_rng([seed, index])
        right, left = _labels(rng, job.p_fracture)
        if job.only is not None and right not in job.only and left not in job.only:
            continue  # rendering is the cost; every study's draws are its own, so skipping changes no other
        confounders = random_confounders(rng, right, left)
        mimics = job.mimics
        if job.generator >= 2 and not mimics and job.random_mimics:
            mimics = random_mimics(rng, right, left)
        extra = {"mimics": mimics} if mimics else {}
        phantom = draw(rng, right, left, confounders, job.swap_marker, job.fracture_lines, **extra)
        base = SITES[sites[index % len(sites)]]
        if vary:
            base = draw_acquisition(base, np.random.default_rng([seed, index, 7]))
        site = dataclasses.replace(
            base,
            columns=int(base.columns * scale),
            rows=int(base.rows * scale),
            compressed=base.compressed and job.compression,
        )
        ds, hips = to_dataset(phantom, site, seed, index)
        truth: dict[str, HipTruth] = {hip.side: hip for hip in hips}
        worked = dict(zip(("R", "L"), phantom.femur_masks, strict=True)) if phantom.femur_masks else {}
        for crop in split_hips(decode_dataset(ds), size):
            hip = truth[crop.laterality or "R"]
            images.append(crop.pixels)
            labels.append(LABELS.index(hip.label))
            boxes.append(crop_box(hip.box, crop, size) if hip.box else np.full(4, np.nan, np.float32))
            site_names.append(site.name)
            femurs.append(crop_box(hip.femur_box, crop, size) if hip.femur_box else np.full(4, np.nan, np.float32))
            studies.append(index)
            if worked:
                masks.append(crop_mask(worked[crop.laterality or "R"], crop, (site.rows, site.columns), size // 4))
    if not images:  # ``only`` matched no study of this chunk
        empty = np.zeros((0, 4), np.float32)
        return CropSet(
            np.zeros((0, size, size), np.uint8), np.zeros(0, int), empty, np.zeros(0, str), empty, np.zeros(0, int)
        )
    return CropSet(
        np.stack(images),
        np.array(labels),
        np.stack(boxes),
        np.array(site_names),
        np.stack(femurs),
        np.array(studies),
        np.stack(masks) if masks else None,
    )


def _masks(parts: list[CropSet]) -> np.ndarray | None:
    """The parts' femur masks joined, or None unless every part has them."""
    if parts and all(p.has_femur_masks for p in parts):
        return np.concatenate([p.femur_mask for p in parts])
    return None


def generate(
    count: int,
    seed: int,
    size: int,
    sites: tuple[str, ...] = TRAINING_SITES,
    scale: float = 0.25,
    p_fracture: float = 0.9,
    workers: int = 2,
    progress: bool = True,
    swap_marker: bool = False,
    compression: bool = False,
    vary: bool = True,
    fracture_lines: bool = True,
    only: tuple[str, ...] | None = None,
    generator: int = 1,
    mimics: tuple[str, ...] = (),
    random_mimics: bool = True,
    start: int = 0,
) -> CropSet:
    """``count`` phantom studies → 2·count hip crops, deterministic by ``seed`` whatever ``workers`` is.

    Each study draws from its own ``(seed, index)`` stream, so ``start`` > 0 renders only studies
    ``start`` … ``count − 1``: exactly the crops a full run would append after the first ``start``
    studies (how ``cds-service train`` grows a cached crop set to more studies).

    Images are stored at ``scale`` × the site's size; ``compression`` keeps the site's lossless
    compression (slower; pixel-identical, so training skips it). ``vary`` draws each study's
    acquisition around its site's profile (:func:`phantoms.draw_acquisition`); external test sets
    keep their fixed profile. ``fracture_lines=False`` draws the fracture lines at zero contrast and
    ``only`` keeps only the studies with a hip of one of these labels (both are for measuring how
    visible a line is: the same studies with and without it; :mod:`evaluation.visibility`).
    ``generator`` picks the phantom generator (:data:`GENERATORS`); ``mimics`` (generator 2) draws
    these fracture mimics on every study (a mimic never changes a label); otherwise generator 2 draws
    one random mimic in :data:`MIMIC_SHARE` of the studies unless ``random_mimics`` is False.
    """
    from rich.progress import Progress

    chunk = 25
    jobs = [
        _Chunk(
            seed,
            first,
            min(chunk, count - first),
            sites,
            size,
            scale,
            p_fracture,
            swap_marker,
            compression,
            vary,
            fracture_lines,
            only,
            generator,
            mimics,
            random_mimics,
        )
        for first in range(start, count, chunk)
    ]
    parts: list[CropSet] = []
    # "spawn": forking a process whose OpenMP/torch threads are running can deadlock the children.
    context = multiprocessing.get_context("spawn")
    with Progress(disable=not progress) as bar, ProcessPoolExecutor(workers, mp_context=context) as pool:
        task = bar.add_task(f"Phantoms (seed {seed}, {'/'.join(sites)})", total=count - start)
        for job, part in zip(jobs, pool.map(_chunk, jobs), strict=True):
            parts.append(part)
            bar.advance(task, job.count)
    return CropSet.concatenate(parts)


def from_folder(folder: Path, size: int, sites: tuple[str, ...] | None = None) -> CropSet:
    """Hip crops from a folder of DICOM files and its ``labels.csv`` (one row per hip), e.g. real data.

    Columns: ``file,side,label,x0,y0,x1,y1,site,confounders`` — what ``cds-service phantoms`` writes.
    ``side`` is the patient side (R/L), matched to the crops by the laterality the header gives; a
    study whose header does not give laterality is skipped (it could not be matched honestly).
    ``label`` is one of :data:`phantoms.LABELS`; the box (fracture, stored-image pixels) may be empty.
    """
    import csv

    from rich.progress import track

    from cds_service.dicom.decode import read_dicom
    from cds_service.errors import UnusableImageError

    rows: dict[str, dict[str, dict[str, str]]] = {}
    with (folder / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["label"] not in LABELS:
                raise ValueError(f"labels.csv: unknown label {row['label']!r} (expected one of {LABELS})")
            if sites is None or row.get("site") in sites:
                rows.setdefault(row["file"], {})[row["side"].upper()] = row
    images, labels, boxes, site_names, femurs, studies = [], [], [], [], [], []
    skipped = 0
    for study, (name, sides) in enumerate(track(sorted(rows.items()), description=f"Reading {folder}")):
        try:
            crops = split_hips(decode_dataset(read_dicom(folder / name)), size)
        except (UnusableImageError, OSError):
            skipped += 1
            continue
        for crop in crops:
            row = sides.get(crop.laterality or "")
            if row is None:
                continue
            box = tuple(int(float(row[k])) for k in ("x0", "y0", "x1", "y1")) if row.get("x0") else None
            images.append(crop.pixels)
            labels.append(LABELS.index(row["label"]))
            boxes.append(crop_box(box, crop, size) if box else np.full(4, np.nan, np.float32))
            site_names.append(row.get("site", ""))
            femurs.append(np.full(4, np.nan, np.float32))  # not annotated in real data
            studies.append(study)
    if not images:
        raise ValueError(f"no usable labelled hips in {folder} ({skipped} files unreadable)")
    return CropSet(
        np.stack(images), np.array(labels), np.stack(boxes), np.array(site_names), np.stack(femurs), np.array(studies)
    )
