"""Benchmark: retrieval of a ~15 MB instance from a real Orthanc over DICOMweb (WADO-RS).

Side by side: our retriever (dicomweb_client, stored transfer syntax, basic auth, Orthanc's HTTP
compression off) from Orthanc, and the same code path on the local DICOMfileClient folder store.

    .venv/bin/python bench/retrieve.py [--runs 7]      (needs Orthanc: .ci/install-servers.sh)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cds_service.dicom.retrieve import DicomRetriever, DicomwebCredentials
from cds_service.training.phantoms import SiteProfile, render, to_dataset
from tests.servers.orthanc import OrthancServer

SITE = SiteProfile("bench", 3000, 2500, 12, "MONOCHROME2", "DX", 1.0, False, 0.02)


def median_ms(retriever: DicomRetriever, base: str, uids: tuple[str, str, str], runs: int) -> float:
    asyncio.run(retriever.retrieve_instance(base, *uids))  # connection, client and index warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        asyncio.run(retriever.retrieve_instance(base, *uids))
        samples.append(1000 * (time.perf_counter() - started))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not OrthancServer.installed():
        raise SystemExit("Orthanc is not installed: run .ci/install-servers.sh")
    ds, _ = to_dataset(render(np.random.default_rng(2), "none", "ao_A2"), SITE, seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        folder.mkdir()
        path = folder / "big.dcm"
        ds.save_as(path, enforce_file_format=True)
        size_mb = path.stat().st_size / 1e6
        uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        server = OrthancServer(Path(tmp) / "orthanc").start()
        try:
            server.upload(path.read_bytes())
            retriever = DicomRetriever(
                [server.dicomweb_url], credentials={server.dicomweb_url: DicomwebCredentials(*server.auth)}
            )
            rows = [("Orthanc DICOMweb (WADO-RS)", median_ms(retriever, server.dicomweb_url, uids, args.runs))]
        except Exception:
            print(server.process.log_tail() if server.process else "", file=sys.stderr)
            raise
        finally:
            server.stop()
        local = DicomRetriever([folder.as_uri()])
        rows.append(("DICOMfileClient folder", median_ms(local, folder.as_uri(), uids, args.runs)))
    print(
        f"\nRetrieve one {SITE.columns}×{SITE.rows} {SITE.bits}-bit instance ({size_mb:.1f} MB), "
        f"median of {args.runs} runs\n"
    )
    reference = rows[0][1]
    print(f"{'source':<28}{'ms':>9}{'vs Orthanc':>12}")
    for label, ms in rows:
        print(f"{label:<28}{ms:>9.1f}{ms / reference:>11.2f}×")


if __name__ == "__main__":
    main()
