"""Decode bombs (issue 30): images whose codestream or deflate stream would make the service allocate gigabytes.

Each bomb is a real encoder's output with only its own header patched (see :mod:`tests.dicom.bombs`).
Before the fix, straight through pydicom: the JPEG SOF bomb took 4.3 GB and 26 s, the JPEG 2000 SIZ
bomb 5.3 GB, the JPEG-LS bomb ran for over two minutes, and the 260 kB Deflate bomb grew the
process by 513 MB. Memory is measured as the peak RSS (``ru_maxrss``) of a fresh Python process,
so this test process's own allocations cannot hide or fake a peak.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pynetdicom.dsutils
import pytest
from pydicom.data import get_testdata_file

from cds_service.dicom.decode import decode_dataset, read_dicom
from cds_service.dicom.inflate import MAX_INFLATED_BYTES
from cds_service.dicom.retrieve import DicomRetriever
from cds_service.errors import StudyUnavailableError, UnusableImageError
from tests.dicom.bombs import jp2_wrapped, jpeg_2000, jpeg_baseline, jpeg_ls, rle, write_deflated
from tests.factory import radiograph, ramp

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20

BOMBS: dict[str, tuple[Callable[[], pydicom.Dataset], str]] = {
    "JPEG baseline SOF0": (
        lambda: jpeg_baseline(bomb=True),
        "JPEG stream says 30000×30000 pixels, the DICOM header 256×256",
    ),
    "JPEG-LS SOF55": (lambda: jpeg_ls(bomb=True), "JPEG-LS stream says 30000×30000 pixels, the DICOM header 64×64"),
    "JPEG 2000 SIZ": (
        lambda: jpeg_2000(bomb=True),
        "JPEG 2000 stream says 30000×30000 pixels, the DICOM header 256×256",
    ),
    "JP2-wrapped SIZ": (
        lambda: jp2_wrapped(bomb=True),
        "JPEG 2000 stream says 30000×30000 pixels, the DICOM header 256×256",
    ),
    "RLE segment count": (lambda: rle(segments=1), "RLE header declares 1 segments, the DICOM header implies 2"),
    "RLE segment offset": (lambda: rle(second_offset=10**6), "segment offsets are out of order or outside the frame"),
}
#: The same encoders' output, unpatched, and the native (uncompressed) image each must decode like.
LEGITIMATE: dict[str, tuple[Callable[[], pydicom.Dataset], Callable[[], pydicom.Dataset]]] = {
    "JPEG baseline": (jpeg_baseline, lambda: radiograph(ramp(rows=256, cols=256, bits=8), bits_stored=8)),
    "JPEG-LS": (jpeg_ls, lambda: pydicom.dcmread(get_testdata_file("MR_small.dcm"))),
    "JPEG 2000": (jpeg_2000, lambda: radiograph(ramp(rows=256, cols=256))),
    "JP2-wrapped JPEG 2000": (jp2_wrapped, lambda: radiograph(ramp(rows=256, cols=256))),
    "RLE": (rle, lambda: radiograph(ramp(rows=128, cols=256))),
}

#: Runs in a fresh interpreter: peak RSS growth across one read + decode, and the refusal's reason.
MEASURE = """
import json, resource, sys, time
from cds_service.dicom.decode import decode_dataset, read_dicom
from cds_service.dicom.retrieve import DicomRetriever
from cds_service.errors import StudyUnavailableError, UnusableImageError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    decode_dataset(read_dicom(sys.argv[1]))
    reason = None
except UnusableImageError as exc:
    reason = str(exc)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"reason": reason, "grown": grown * 1024, "seconds": time.monotonic() - start}))
"""


def measure(path: Path) -> dict[str, object]:
    """Read and decode ``path`` in a fresh process (killed after 60 s: the old JPEG-LS path ran for minutes)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", BOMBS)
def test_codestream_bomb_is_refused_before_decoding(name: str):
    build, reason = BOMBS[name]
    ds = build()
    start = time.monotonic()
    with pytest.raises(UnusableImageError, match=reason):
        decode_dataset(ds)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("name", LEGITIMATE)
def test_the_same_encoders_unpatched_output_decodes(name: str):
    build, native = LEGITIMATE[name]
    truth = native()
    truth.BodyPartExamined = "PELVIS"
    decoded, expected = decode_dataset(build()).grey, decode_dataset(truth).grey
    if name == "JPEG baseline":  # lossy
        assert np.abs(decoded.astype(int) - expected).mean() < 2.0
    else:
        np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("name", ["JPEG baseline SOF0", "JPEG-LS SOF55", "JPEG 2000 SIZ"])
def test_codestream_bomb_costs_no_memory(name: str, tmp_path: Path):
    build, reason = BOMBS[name]
    path = tmp_path / "bomb.dcm"
    build().save_as(path, enforce_file_format=True)
    result = measure(path)
    assert result["reason"] == reason
    assert result["grown"] < 32 * MiB  # the codec was told to allocate 900 M samples
    assert result["seconds"] < 2.0


@pytest.fixture(scope="module")
def deflate_bomb(tmp_path_factory) -> Path:
    """8192×16384 16-bit zeros: 256 MiB inflated, ~260 kB on disk."""
    path = tmp_path_factory.mktemp("deflate") / "bomb.dcm"
    write_deflated(path, 8192, 16384)
    assert path.stat().st_size < 512 * 1024
    return path


DEFLATE_REASON = f"deflated data set inflates beyond the {MAX_INFLATED_BYTES}-byte limit"


def test_deflate_bomb_is_refused_with_bounded_memory(deflate_bomb: Path):
    result = measure(deflate_bomb)
    assert result["reason"] == DEFLATE_REASON
    assert result["grown"] < MAX_INFLATED_BYTES + 32 * MiB  # 256 MiB + its copy before the fix


def test_deflate_bomb_is_refused_by_pydicom_itself(deflate_bomb: Path):
    """dicomweb_client (DICOMweb and folder stores) parses with ``pydicom.dcmread``: it is bounded too."""
    with pytest.raises(UnusableImageError, match=DEFLATE_REASON):
        pydicom.dcmread(deflate_bomb)
    with pytest.raises(UnusableImageError, match=DEFLATE_REASON):
        read_dicom(deflate_bomb.read_bytes())


def test_deflate_bomb_is_refused_by_the_storage_scp_decoder(deflate_bomb: Path):
    """C-STORE with the deflated transfer syntax: pynetdicom inflates the data set it received."""
    data = deflate_bomb.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # (0002,0000) group length, PS3.10 §7.1
    with pytest.raises(UnusableImageError, match=DEFLATE_REASON):
        pynetdicom.dsutils.decode(io.BytesIO(data[meta_end:]), False, True, deflated=True)


def test_a_legitimate_deflated_radiograph_decodes(tmp_path: Path):
    rows, columns = 2048, 2500  # a real radiograph's size: 10 MB inflated
    pixels = (np.random.default_rng(1).integers(0, 4096, (rows, columns))).astype("<u2")
    write_deflated(tmp_path / "dx.dcm", rows, columns, pixels.tobytes())
    ds = read_dicom(tmp_path / "dx.dcm")
    np.testing.assert_array_equal(ds.pixel_array, pixels)
    assert decode_dataset(ds).grey.shape == (rows, columns)


async def test_a_deflate_bomb_in_a_folder_store_spoils_only_itself(tmp_path: Path):
    """The folder store's index skips the bomb (as any unreadable file) and still serves its neighbours."""
    store = tmp_path / "store"
    store.mkdir()
    bomb = write_deflated(store / "bomb.dcm", 8192, 16384)
    good = radiograph(ramp())
    good.save_as(store / "good.dcm", enforce_file_format=True)
    retriever = DicomRetriever([store.as_uri()], local_folder=store)
    try:
        ds = await retriever.retrieve_instance(
            store.as_uri(), good.StudyInstanceUID, good.SeriesInstanceUID, good.SOPInstanceUID
        )
        assert ds.SOPInstanceUID == good.SOPInstanceUID
        with pytest.raises(StudyUnavailableError):
            await retriever.retrieve_instance(
                store.as_uri(), bomb.StudyInstanceUID, bomb.SeriesInstanceUID, bomb.SOPInstanceUID
            )
    finally:
        retriever.close()
