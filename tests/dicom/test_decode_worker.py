"""Decoding in bounded worker processes (issue 30): an image that exceeds the memory or time limit
costs one worker, never the service.

The pathological image is real and passes every header and codestream check: a JPEG-LS stream
(CharLS, through pydicom's ``compress``) that honestly declares 7745×7745 pixels, the largest
image ``HIPCAD_MAX_IMAGE_PIXELS`` allows. Blank, it is a 1 kB file; decoding it takes ~850 MB and
holds the GIL for ~0.5 s (in the service process, ten of them blocked ``/healthz`` for seconds and
grew the service by gigabytes). With noise-like content the same size takes ~2 s to decode.

The service test runs the real ``cds-service serve`` with the real Triton and a folder store, and
measures what an SRE would: ``/healthz`` latency and the server process's RSS (``/proc``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from math import isqrt
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, generate_uid

from cds_service.cdshooks.cards import UNAVAILABLE_SUMMARY
from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.dicom.decode import MAX_PIXELS, decode_dataset
from cds_service.dicom.worker import DecodeWorkers
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.errors import UnusableImageError
from cds_service.inference.triton_server import TritonServer, free_port
from tests.dicom.bombs import jpeg_2000, jpeg_baseline, jpeg_ls, rle
from tests.factory import radiograph, ramp
from tests.servers.base import ServerProcess

MiB = 2**20
#: The edge of the largest square image the default pixel limit allows (7745).
GIANT_EDGE = isqrt(MAX_PIXELS)
#: A limit that admits the sample study (1380×2039) and refuses the giant.
SMALL_MEMORY_MB = 512
PATH = "/cds-services/hip-fracture-order-select"


def giant(content: str) -> pydicom.Dataset:
    """A ``GIANT_EDGE``² 12-bit radiograph, JPEG-LS lossless; ``blank`` (1 kB) or ``texture`` (8 MB)."""
    if content == "blank":
        pixels = np.zeros((GIANT_EDGE, GIANT_EDGE), np.uint16)
    else:
        pixels = (np.add.outer(np.arange(GIANT_EDGE), np.arange(GIANT_EDGE) * 7) % 4096).astype(np.uint16)
    ds = radiograph(pixels)
    ds.compress(JPEGLSLossless)
    return ds


@pytest.fixture(scope="module")
def blank_giant() -> pydicom.Dataset:
    ds = giant("blank")
    assert len(ds.PixelData) < 4096
    return ds


@pytest.fixture(scope="module")
def textured_giant() -> pydicom.Dataset:
    return giant("texture")


@pytest.fixture
def pool() -> Iterator[DecodeWorkers]:
    workers = DecodeWorkers(workers=1, memory_mb=1536, timeout_s=30.0)
    yield workers
    workers.close()


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def decodes_normally(pool: DecodeWorkers) -> None:
    ds = radiograph(ramp())
    np.testing.assert_array_equal(pool.decode(ds, MAX_PIXELS).grey, decode_dataset(ds).grey)


# Unit: the pool itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [lambda: radiograph(ramp(), ImageLaterality="R"), jpeg_baseline, jpeg_ls, jpeg_2000, rle],
    ids=["native", "JPEG baseline", "JPEG-LS", "JPEG 2000", "RLE"],
)
def test_a_worker_decodes_exactly_as_the_service_process(pool: DecodeWorkers, build):
    ds = build()
    ours, theirs = decode_dataset(ds), pool.decode(ds, MAX_PIXELS)
    np.testing.assert_array_equal(theirs.grey, ours.grey)
    assert theirs.grey.flags.writeable and theirs.grey.dtype == np.uint8
    assert (theirs.row_direction, theirs.image_laterality, theirs.sop_instance_uid) == (
        ours.row_direction,
        ours.image_laterality,
        ours.sop_instance_uid,
    )


def test_a_refusal_crosses_unchanged_and_keeps_the_worker(pool: DecodeWorkers):
    before = pool.pids()
    with pytest.raises(UnusableImageError, match="Photometric Interpretation RGB is not grey-scale") as refused:
        pool.decode(radiograph(ramp(), photometric="RGB"), MAX_PIXELS)
    assert refused.value.reason_code == "image-not-analysable"
    with pytest.raises(UnusableImageError, match="exceeds the 1000 pixel limit"):
        pool.decode(radiograph(ramp()), 1000)
    assert pool.pids() == before and pool.replaced == 0
    decodes_normally(pool)


def test_an_image_over_the_memory_limit_costs_one_worker(blank_giant: pydicom.Dataset):
    pool = DecodeWorkers(workers=1, memory_mb=SMALL_MEMORY_MB, timeout_s=30.0)
    try:
        (first,) = pool.pids()
        with pytest.raises(UnusableImageError, match=f"needs more than the {SMALL_MEMORY_MB} MB decode memory limit"):
            pool.decode(blank_giant, MAX_PIXELS)
        (second,) = pool.pids()
        assert second != first and not pid_exists(first) and pool.replaced == 1
        decodes_normally(pool)
    finally:
        pool.close()


def test_an_image_over_the_time_limit_costs_one_worker(textured_giant: pydicom.Dataset):
    pool = DecodeWorkers(workers=1, memory_mb=1536, timeout_s=0.5)
    try:
        decodes_normally(pool)  # started and warm: the limit is the decoding's alone
        (first,) = pool.pids()
        started = time.monotonic()
        with pytest.raises(UnusableImageError, match=r"decoding took longer than the 0\.5 s limit"):
            pool.decode(textured_giant, MAX_PIXELS)
        assert time.monotonic() - started < 1.5  # the caller is answered at the limit, not when CharLS is done
        assert not pid_exists(first) and pool.replaced == 1
        decodes_normally(pool)
    finally:
        pool.close()


def test_a_worker_killed_mid_decode_is_reported_and_replaced(pool: DecodeWorkers, textured_giant: pydicom.Dataset):
    """The kernel's OOM killer (or a codec crash) ends a worker: that image is refused, the next decodes."""
    (first,) = pool.pids()
    threading.Timer(0.3, os.kill, (first, signal.SIGKILL)).start()
    with pytest.raises(UnusableImageError, match=r"the decoder process ended \(signal 9\)"):
        pool.decode(textured_giant, MAX_PIXELS)
    assert pool.pids() != [first]
    decodes_normally(pool)


def test_a_worker_that_died_while_idle_costs_no_image(pool: DecodeWorkers):
    (first,) = pool.pids()
    os.kill(first, signal.SIGKILL)
    while pid_exists(first):  # dead (a zombie until the pool reaps it), as it would be found
        time.sleep(0.01)
    decodes_normally(pool)
    assert pool.pids() != [first]


# The real service ------------------------------------------------------------------------------


@dataclass
class Probe:
    """``/healthz`` latencies and the server's RSS, sampled every 50 ms until stopped."""

    url: str
    pid: int
    latencies: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            assert httpx.get(self.url + "/healthz", timeout=30).status_code == 200
            self.latencies.append(time.perf_counter() - started)
            self.rss.append(rss_bytes(self.pid))
            time.sleep(0.05)


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` (its worker processes are not counted: they are the ones allowed to grow)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Service:
    url: str
    process: ServerProcess
    folder: Path
    private_key: bytes

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def hook(self, name: str) -> dict:
        ds = pydicom.dcmread(self.folder / name, stop_before_pixels=True)
        template = load_example("order-select.json")
        body = with_studies(template, imaging_study_bundle(ds, template["context"]["patientId"], self.folder.as_uri()))
        token = sign_request_jwt(self.private_key, "hipcad-demo-ehr", self.url + PATH)
        response = httpx.post(self.url + PATH, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        assert response.status_code == 200, response.text
        (card,) = response.json()["cards"]
        return card


def write_store(folder: Path, bomb: pydicom.Dataset, count: int) -> None:
    """Two sample studies and ``count`` copies of ``bomb``, each its own study (no result is shared)."""
    from cds_service.training.phantoms import write_sample_study

    for seed in (7, 8):
        write_sample_study(folder, seed=seed)
    for i in range(count):
        bomb.StudyInstanceUID, bomb.SeriesInstanceUID = generate_uid(), generate_uid()
        bomb.SOPInstanceUID = bomb.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        bomb.save_as(folder / f"giant-{i}.dcm", enforce_file_format=True)


def start_service(folder: Path, triton: TritonServer, ehr_keys: tuple[bytes, Path], logs: Path, **env: str) -> Service:
    url = f"http://127.0.0.1:{free_port()}"
    settings = {
        "HIPCAD_HOST": "127.0.0.1",
        "HIPCAD_PORT": url.rsplit(":", 1)[1],
        "HIPCAD_PUBLIC_BASE_URL": url,
        "HIPCAD_JWT_PUBLIC_KEY_FILE": str(ehr_keys[1]),
        "HIPCAD_DICOM_FOLDER": str(folder),
        "HIPCAD_TRITON_URL": triton.grpc_url,
        "HIPCAD_HOOK_DEADLINE_S": "60",
        "HIPCAD_FEEDBACK_DB": str(logs / "store.sqlite3"),
        **env,
    }
    command = [str(Path(sys.executable).parent / "cds-service"), "serve"]
    process = ServerProcess("cds-service", command, logs / "service.log", env={**os.environ, **settings})
    process.start(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200, timeout_s=90)
    return Service(url, process, folder, ehr_keys[0])


@dataclass
class BombRun:
    """What the giant images did to the service: the cards, and the probe's figures."""

    cards: list[dict]
    idle: list[float]
    busy: list[float]
    rss_normal: int
    rss_max: int

    @staticmethod
    def worst(latencies: list[float]) -> str:
        ordered = sorted(latencies)
        return f"max {1000 * ordered[-1]:.0f} ms, p99 {1000 * ordered[int(0.99 * (len(ordered) - 1))]:.0f} ms"

    def summary(self) -> str:
        return (
            f"/healthz idle {self.worst(self.idle)}, during {self.worst(self.busy)}; "
            f"RSS normal {self.rss_normal / MiB:.0f} MiB, max {self.rss_max / MiB:.0f} MiB "
            f"(+{(self.rss_max - self.rss_normal) / MiB:.0f} MiB)"
        )


def probed(service: Service, seconds: float | None = None, during: threading.Thread | None = None) -> Probe:
    """Probe for ``seconds``, or while ``during`` runs."""
    probe = Probe(service.url, service.pid)
    prober = threading.Thread(target=probe.run)
    prober.start()
    if during is not None:
        time.sleep(0.3)
        during.start()
        during.join(300)
        time.sleep(0.3)
    else:
        time.sleep(seconds or 0)
    probe.stop.set()
    prober.join(60)
    return probe


def bombard(service: Service, count: int, spacing_s: float = 0.15) -> BombRun:
    """A normal study (the working set), the idle service probed, then ``count`` giant images.

    The requests are ``spacing_s`` apart, all in flight together (each decode takes longer than the
    whole spread): a burst of ten hooks at the same instant — even ten cache hits, no decoding at
    all — holds the event loop ~300 ms on a 2-core box in request handling (JWT, FHIR parsing), which
    is not what this measures.
    """
    assert service.hook("sample-7.dcm")["summary"] != UNAVAILABLE_SUMMARY
    idle = probed(service, seconds=2.0)
    cards: list[dict] = [{}] * count

    def send_all() -> None:
        def send(i: int) -> None:
            cards[i] = service.hook(f"giant-{i}.dcm")

        senders = [threading.Thread(target=send, args=(i,)) for i in range(count)]
        for sender in senders:
            sender.start()
            time.sleep(spacing_s)
        for sender in senders:
            sender.join(300)

    busy = probed(service, during=threading.Thread(target=send_all))
    return BombRun(cards, idle.latencies, busy.latencies, max(idle.rss), max(busy.rss))


@pytest.fixture(scope="module")
def bounded_service(triton, ehr_keys, tmp_path_factory, blank_giant: pydicom.Dataset) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("giant-store")
    write_store(folder, blank_giant, count=10)
    service = start_service(
        folder,
        triton,
        ehr_keys,
        tmp_path_factory.mktemp("giant-logs"),
        HIPCAD_DECODE_WORKERS="2",
        HIPCAD_DECODE_MEMORY_MB=str(SMALL_MEMORY_MB),
        HIPCAD_DECODE_TIMEOUT_S="20",
    )
    yield service
    service.process.stop()


@pytest.mark.triton
@pytest.mark.slow
def test_ten_giant_images_cost_workers_not_the_service(bounded_service: Service):
    """/healthz within 100 ms of the idle service's own latency on this machine (on a quiet machine
    that is ~2 ms: the bound is 100 ms; on a shared CI box the box's own delay is not the service's).

    The bound is on the 99th percentile: one scheduling hiccup of a loaded 2-core box is not the
    service's; decoding in the service's own process blocked it for 700 ms at p99 (this test's bug)."""
    run = bombard(bounded_service, count=10)
    print(f"\nbounded workers ({SMALL_MEMORY_MB} MB each): {run.summary()}")
    for card in run.cards:  # what the clinician sees: no result for that image, and why
        assert card["summary"] == UNAVAILABLE_SUMMARY
        assert "`image-not-analysable`" in card["detail"]
    busy = sorted(run.busy)
    assert busy[int(0.99 * (len(busy) - 1))] < 0.1 + max(run.idle), run.summary()
    assert run.rss_max <= run.rss_normal + 256 * MiB, run.summary()
    # The killed workers were replaced: the next normal study is analysed.
    card = bounded_service.hook("sample-8.dcm")
    assert card["summary"] != UNAVAILABLE_SUMMARY and "analysis" not in card["summary"].lower(), card["summary"]
