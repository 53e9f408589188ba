"""No DICOM input crashes decode + preprocess: pydicom's whole test corpus and generated corruptions.

Every input ends as "analysed" or "rejected with a reason" (UnusableImageError); anything else is a
crash and fails the test. The outcome counts are printed (run with -s to see them).
"""

from __future__ import annotations

import collections
import os
import random
import warnings
from pathlib import Path

import pydicom
import pytest

from cds_service.dicom.decode import decode_dataset, read_dicom
from cds_service.dicom.preprocess import split_hips
from cds_service.errors import UnusableImageError
from cds_service.training.phantoms import write_sample_study

CORPUS = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"


def outcome(source: Path | bytes) -> str:
    """'analysed' or 'rejected: <reason>'; any other exception propagates (= a crash)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = decode_dataset(read_dicom(source))
            split_hips(image, 64)
        except UnusableImageError as exc:
            return "rejected: " + str(exc).split("(")[0].strip()
    return "analysed"


def report(title: str, outcomes: collections.Counter) -> None:
    print(f"\n{title}: {sum(outcomes.values())} inputs")
    for name, count in outcomes.most_common():
        print(f"  {count:5d}  {name}")


def test_pydicom_corpus_never_crashes():
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    assert len(files) > 100
    outcomes = collections.Counter(outcome(path) for path in files)
    report("pydicom test corpus", outcomes)
    assert outcomes["analysed"] > 10  # a decoder that rejects everything would pass too easily


@pytest.fixture(scope="module")
def phantom_bytes(tmp_path_factory) -> bytes:
    return write_sample_study(tmp_path_factory.mktemp("p"), seed=11, site="site-c").read_bytes()


def test_truncation_at_many_offsets_never_crashes(phantom_bytes):
    offsets = sorted({*range(0, 2048, 37), *range(2048, len(phantom_bytes), len(phantom_bytes) // 40)})
    outcomes = collections.Counter(outcome(phantom_bytes[:offset]) for offset in offsets)
    report("truncations", outcomes)
    assert outcomes["analysed"] == 0  # a truncated radiograph is never analysed as if complete


def test_flipped_header_bytes_never_crash(phantom_bytes):
    rng = random.Random(5)
    header_end = phantom_bytes.find(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
    outcomes = collections.Counter()
    for _ in range(300):
        corrupt = bytearray(phantom_bytes)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(132, header_end)] = rng.randrange(256)
        outcomes[outcome(bytes(corrupt))] += 1
    report("flipped header bytes", outcomes)
    assert sum(outcomes.values()) == 300


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("Rows", 10_000),
        ("Columns", 3),
        ("BitsStored", 40),
        ("BitsAllocated", 7),
        ("SamplesPerPixel", 3),
        ("PixelRepresentation", 1),
        ("WindowWidth", 0),
        ("RescaleSlope", 0),
        ("NumberOfFrames", 2),
    ],
)
def test_wrong_header_values_are_rejected_or_handled(phantom_bytes, attribute, value):
    ds = read_dicom(phantom_bytes)
    setattr(ds, attribute, value)
    if attribute == "WindowWidth":
        ds.WindowCenter = 128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            split_hips(decode_dataset(ds), 64)
        except UnusableImageError:
            pass


def test_non_image_objects_are_rejected():
    for name in ("test-SR.dcm", "rtplan.dcm"):
        assert outcome(CORPUS / name).startswith("rejected: no Pixel Data")
