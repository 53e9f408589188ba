"""Phantoms as DICOM: a site's encoding of a rendered radiograph, the demo's sample study and labelled sets."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes as sr_codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from cds_service.training.phantoms.cartoon import random_confounders, render
from cds_service.training.phantoms.filters import blur as _blur
from cds_service.training.phantoms.sites import SITES, TRAINING_SITES, SiteProfile, apply_curve
from cds_service.training.phantoms.truth import LABELS, HipTruth, Phantom

UID_PREFIX = "1.2.826.0.1.3680043.10.1337."  # deterministic UIDs: generate_uid(prefix, entropy)


def _scale_box(box: tuple[int, int, int, int] | None, sx: float, sy: float) -> tuple[int, int, int, int] | None:
    if box is None:
        return None
    return (int(box[0] * sx), int(box[1] * sy), math.ceil(box[2] * sx), math.ceil(box[3] * sy))


def to_dataset(
    phantom: Phantom, site: SiteProfile, seed: int, index: int = 0, study_date: str = "20261120"
) -> tuple[pydicom.Dataset, tuple[HipTruth, ...]]:
    """Encode a phantom as a DICOM dataset of the site's profile; boxes are scaled to stored pixels."""
    rows, cols = phantom.image.shape
    image = np.asarray(
        Image.fromarray(phantom.image, mode="F").resize((site.columns, site.rows), Image.Resampling.BILINEAR)
    )
    if not phantom.noise_applied:  # a physics phantom carries its detector's quantum noise already
        rng = np.random.default_rng([seed, index, 99])
        image = np.clip(image + rng.normal(0, site.noise, image.shape).astype(np.float32), 0, 1)
    if site.sharpen:
        sigma = max(1.0, site.columns / 400)
        image = np.clip(image + site.sharpen * (image - _blur(image, sigma)), 0, 1)
    image = apply_curve(image, site.curve, site.gamma).astype(np.float32)
    if site.photometric == "MONOCHROME1":
        image = 1.0 - image
    top = (1 << site.bits) - 1
    stored = np.round(image * top).astype(np.uint8 if site.bits <= 8 else np.uint16)
    sx, sy = site.columns / cols, site.rows / rows
    hips = tuple(
        HipTruth(h.side, h.label, _scale_box(h.box, sx, sy), _scale_box(h.femur_box, sx, sy)) for h in phantom.hips
    )

    uid = lambda kind: generate_uid(UID_PREFIX, entropy_srcs=[str(seed), str(index), site.name, kind])  # noqa: E731
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = DigitalXRayImageStorageForPresentation if site.modality == "DX" else ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid("instance")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.PatientName, ds.PatientID = f"Phantom^{seed}-{index}", f"PHANTOM-{seed}-{index}"
    ds.PatientSex, ds.PatientBirthDate = "F", "19410302"
    ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = study_date, "101500", 1, 1
    ds.AccessionNumber, ds.StudyID = f"ACC{seed}{index:05d}", "1"
    ds.ReferringPhysicianName = ""  # Type 2 (General Study): present, empty when unknown
    ds.Modality, ds.Manufacturer = site.modality, f"hipcad phantom ({site.name})"
    ds.StudyDescription = "XR PELVIS AP (synthetic phantom)"
    ds.BodyPartExamined, ds.ViewPosition = "PELVIS", "AP"
    ds.PatientOrientation, ds.ImageLaterality = ["L", "F"], "B"
    spacing = 0.143 * 4892 / site.columns
    ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    if site.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        _dx_modules(ds, site, stored)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, site.photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = stored.dtype.itemsize * 8, site.bits, site.bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PixelData = stored.tobytes()
    if site.compressed:
        # pydicom's own RLE encoder; JPEG 2000 through pylibjpeg-openjpeg (a serving dependency too).
        # Lossless: the instance keeps its (deterministic) SOP Instance UID; pydicom would draw a new one.
        ds.compress(
            site.transfer_syntax,
            encoding_plugin="pydicom" if site.transfer_syntax == RLELossless else "",
            generate_instance_uid=False,
        )
    return ds, hips


def _code_item(code: Code) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _dx_modules(ds: pydicom.Dataset, site: SiteProfile, stored: np.ndarray) -> None:
    """The DX-only attributes of the Digital X-Ray Image IOD (PS3.3 A.26), For Presentation.

    Header only: the pixels are those of every other profile. The one attribute the decoder reads
    is the VOI LUT, which DX For Presentation requires (Window Center or VOI LUT Sequence, Type 1C,
    C.8.11.3): an identity LUT over the stored values that occur, which maps them exactly as the
    decoder does when an image has no VOI (the used range stretched), so decoded pixels are unchanged.
    """
    monochrome2 = site.photometric == "MONOCHROME2"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]  # C.8.11.3.1.1: Value 3 present and empty
    ds.AnatomicRegionSequence = [_code_item(sr_codes.cid4009.Pelvis)]  # General Anatomy Required, Type 2
    ds.ViewCodeSequence = [_code_item(sr_codes.cid4010.AnteroPosterior)]  # View Position AP, coded
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = []
    # Processed for display: a monotone, non-linear function of beam intensity; LOG is the nearer of
    # the two Enumerated Values. Bone (less beam intensity) is bright in MONOCHROME2: higher values.
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if monochrome2 else 1
    ds.PresentationLUTShape = "IDENTITY" if monochrome2 else "INVERSE"  # C.8.11.3.1.6
    ds.LossyImageCompression = "00"  # lossless (RLE, JPEG 2000 lossless) or none
    ds.BurnedInAnnotation = "NO"  # a laterality letter identifies neither patient nor date
    lo, hi = int(stored.min()), int(stored.max())
    entries = hi - lo + 1
    # Entries have 10–16 bits (C.8.11.3.1.5), all of them used: a narrower range (8-bit images) is
    # scaled by a power of two, which the decoder's normalisation cancels exactly.
    step = 1 << max(0, 10 - (hi - lo).bit_length())
    voi = pydicom.Dataset()
    voi.add_new(0x00283002, "US", [entries % 65536, lo, max(10, ((hi - lo) * step).bit_length())])  # 65536 entries: 0
    voi.LUTExplanation = "Stored range"
    voi.add_new(0x00283006, "OW", (np.arange(entries, dtype="<u2") * step).tobytes())  # LUT Data
    ds.VOILUTSequence = [voi]
    ds.DetectorType = ""  # Type 2: unknown for a synthetic detector
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = []


def renderer(version: int = 1) -> Callable[..., Phantom]:
    """The renderer of a phantom generator version (caches are keyed by it): 1 the 2-D cartoon
    (:mod:`.cartoon`; models up to fracture 5 / garden 5 were trained on it), 2 the radiograph from 3-D
    anatomy through the physics of the exposure (:mod:`.radiograph`, imported only when asked for; the
    shipped models' since version 6)."""
    if version == 1:
        return render
    if version == 2:
        from cds_service.training.phantoms import radiograph

        return radiograph.render
    raise ValueError(f"unknown phantom generator version {version}")


def write_sample_study(
    folder: Path,
    seed: int = 7,
    right: str = "garden_III",
    left: str = "none",
    site: str = "site-c",
    *,
    version: int = 2,
) -> Path:
    """Write one bilateral AP pelvis study (one instance) into ``folder``; returns its path.

    ``version`` picks the phantom generator (:func:`renderer`): 2, rendered from 3-D anatomy, is what
    the shipped models were trained on; 1 is the cartoon."""
    rng = np.random.default_rng(seed)
    phantom = renderer(version)(rng, right, left)
    # Acquired "today", so the sample passes the service's look-back window whenever the demo runs.
    ds, _ = to_dataset(phantom, SITES[site], seed, study_date=date.today().strftime("%Y%m%d"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sample-{seed}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_phantom_set(
    folder: Path, count: int, seed: int, sites: tuple[str, ...] = TRAINING_SITES, *, version: int = 2
) -> Path:
    """Write ``count`` phantom studies and ``labels.csv`` (one row per hip) into ``folder``."""
    from rich.progress import track

    draw = renderer(version)

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "side", "label", "x0", "y0", "x1", "y1", "site", "confounders"])
        for index in track(range(count), description=f"Writing {count} phantoms"):
            right, left = sample_labels(rng)
            confounders = random_confounders(rng, right, left)
            site = SITES[sites[index % len(sites)]]
            ds, hips = to_dataset(draw(rng, right, left, confounders), site, seed, index)
            name = f"phantom-{seed}-{index:05d}.dcm"
            ds.save_as(folder / name, enforce_file_format=True)
            for hip in hips:
                writer.writerow(
                    [name, hip.side, hip.label, *(hip.box or ("", "", "", "")), site.name, "|".join(confounders)]
                )
    return folder / "labels.csv"


def sample_labels(rng: np.random.Generator) -> tuple[str, str]:
    """At most one fractured hip per study (as in the study's data); half the studies have one."""
    if rng.random() < 0.5:
        return "none", "none"
    label = str(rng.choice(LABELS[1:], p=[0.15, 0.15, 0.15, 0.15, 0.14, 0.13, 0.13]))
    return (label, "none") if rng.random() < 0.5 else ("none", label)
