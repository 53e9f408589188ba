"""Benchmark: decode + preprocess of a 3000×2500 12-bit radiograph, per transfer syntax.

Side by side: our fused lookup table vs pydicom's apply_modality_lut + apply_voi_lut (the naive
path), and the split/resize that follows. Target: ≤ 50 ms for uncompressed and RLE on this CPU.
The last columns decode in a bounded worker process (:mod:`cds_service.dicom.worker`, as the
service does) and give its overhead: the data set pickled over, the grey levels sent back.

    .venv/bin/python bench/decode.py [--runs 7]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEG2000Lossless, RLELossless

from cds_service.dicom.decode import decode_dataset
from cds_service.dicom.preprocess import split_hips
from cds_service.dicom.worker import DecodeWorkers
from cds_service.training.phantoms import SiteProfile, render, to_dataset

SITE = SiteProfile("bench", 3000, 2500, 12, "MONOCHROME2", "DX", 1.0, False, 0.02)


def encoded(syntax: object | None) -> bytes:
    ds, _ = to_dataset(render(np.random.default_rng(1), "garden_II", "none"), SITE, seed=1)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    if syntax is not None:
        ds.compress(syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def timed(func, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        samples.append(1000 * (time.perf_counter() - started))
    return statistics.median(samples)


def naive(data: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(data))
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    (values - values.min()) / (values.max() - values.min())


def ours(data: bytes) -> None:
    split_hips(decode_dataset(pydicom.dcmread(io.BytesIO(data))), 224)


def in_worker(pool: DecodeWorkers, data: bytes) -> None:
    split_hips(pool.decode(pydicom.dcmread(io.BytesIO(data)), 60_000_000), 224)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"\nDecode + preprocess, {SITE.columns}×{SITE.rows} {SITE.bits}-bit, median of {args.runs} runs (ms)")
    print(f"CPU: {cpu_model()}\n")
    print(
        f"{'transfer syntax':<28}{'size MB':>9}{'naive LUT':>11}{'ours+split':>12}{'ratio':>8}{'≤ 50 ms':>9}"
        f"{'in worker':>11}{'overhead':>10}"
    )
    pool = DecodeWorkers(workers=1, memory_mb=1536, timeout_s=30.0)
    for name, syntax in (
        ("Explicit VR Little Endian", None),
        ("RLE Lossless", RLELossless),
        ("JPEG 2000 Lossless", JPEG2000Lossless),
    ):
        data = encoded(syntax)
        ours(data)  # warm caches and codec imports
        in_worker(pool, data)
        slow, fast = timed(lambda d=data: naive(d), args.runs), timed(lambda d=data: ours(d), args.runs)
        isolated = timed(lambda d=data: in_worker(pool, d), args.runs)
        target = "yes" if fast <= 50 else ("no" if syntax in (None, RLELossless) else "n/a")
        print(
            f"{name:<28}{len(data) / 1e6:>9.1f}{slow:>11.1f}{fast:>12.1f}{slow / fast:>7.1f}×{target:>9}"
            f"{isolated:>11.1f}{isolated - fast:>+10.1f}"
        )
    pool.close()


if __name__ == "__main__":
    main()
