"""Load benchmark: many concurrent EHR clients against the running stack on loopback.

Starts the real local Triton and one ``cds-service serve`` process (its own process, so its RSS is its
own), with an image folder holding a few "repeated" studies and a pool of new ones (clones of phantom
studies with fresh UIDs: a new SOP Instance UID is a new analysis, the work is the same). Then, each
phase for a fixed time, ``--concurrency`` clients send signed hooks (order-select, order-sign and
patient-view in turn, each with its own JWT and the study in ``prefetch``; a new study goes with an
order hook, which waits for its analysis) as fast as answers come:

1. **repeated**: studies already analysed (answered from the result store);
2. **new**: every hook about a study nobody has analysed yet (studies/s = analyses/s);
3. **soak**: ``--soak-concurrency`` clients for ``--soak-seconds``, 90 % repeated and 10 % new,
   with the service's RSS before and after;
4. **fault**: the soak's mix at ``--concurrency``, with PostgreSQL stopped for ``--outage-seconds``
   after ``--fault-margin`` seconds and started again for the last ``--fault-margin``: every answer
   must be 200, and every card issued must be a row of the ``card`` table once the outbox has been
   replayed (counted as tests/test_faults.py does);
5. **giant**: 10 hooks about distinct giant images (the 7745×7745 JPEG-LS radiograph of
   tests/dicom/test_decode_worker.py, ~850 MB to decode) 0.15 s apart, with the service's RSS
   sampled every 50 ms: its peak must stay within its normal working set (the peak over 2 s after a
   normal hook, just before) + 256 MB; decoding belongs in the bounded workers.

The service runs as in production: on PostgreSQL (the tests' throwaway cluster of Debian's
``postgresql``, tests/servers/postgres.py) with the default decode workers, and with
``HIPCAD_JTI_STRICT=false`` so that hooks are answered through the outage (the trade-off: jwt.py).

``--rounds N`` runs phases 1 and 2 N times on the same service (each round on studies never seen
before) and prints every round and the spread: on a shared machine one round can be ±20 % off the
next, and a tail target is only met when every round meets it.

Prints throughput, p50/p95/p99 latency, errors (non-200 answers or transport failures) and how many
answers carried a finding card (the rest: "analysis in progress" cards after the hook deadline), with
the CPU model. The clients run on the same cores as the service: figures are for the whole box.

Targets on a 2-core machine with the shipped models: at concurrency 8, ≥ 20 hooks/s on repeated
studies and ≥ 8 new studies/s, p99 ≤ 1 s (phases 1–3), 0 errors; RSS growth ≤ 10 % over 60 s at
concurrency 16; PostgreSQL stopped 30 s: 0 errors, 0 lost cards; 10 giant images: RSS ≤ working set
+ 256 MB. ``--quick`` is a short run (5 s phases, a 10 s soak, the outage still 30 s).

    .venv/bin/python bench/load.py [--seconds 20] [--concurrency 8] [--soak-seconds 60] [--soak-concurrency 16]
                                   [--rounds 1] [--outage-seconds 30] [--fault-margin 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.e2e's helpers

from bench.e2e import cpu_model, percentile
from cds_service.cdshooks.jwt import ensure_keypair, sign_request_jwt
from cds_service.demo import free_port
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import TritonServer
from cds_service.settings import Settings
from cds_service.store import schema
from cds_service.store.sql import engine_for
from cds_service.training.phantoms import write_sample_study
from tests.dicom.test_decode_worker import giant
from tests.servers.postgres import PostgresServer
from tests.servers.postgres import available as postgres_available

MiB = 2**20
GIANTS = 10  # giant images requested in the RSS phase
RSS_BOUND_MIB = 256  # the service's RSS over its working set while they are requested

HOOKS = {  # service id → the example request it is built from
    "hip-fracture-order-select": "order-select.json",
    "hip-fracture-order-sign": "order-sign.json",
    "hip-fracture-patient-view": "patient-view.json",
}


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    concurrency: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    findings: int = 0
    new_studies: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    card_uuids: list[str] = field(default_factory=list)  # every card answered (each is recorded)

    def record(self, latency: float, finding: bool, error: str | None, uuids: list[str]) -> None:
        self.latencies_ms.append(latency)
        self.findings += finding
        self.card_uuids += uuids
        if error:
            self.errors += 1
            self.error_kinds[error] = self.error_kinds.get(error, 0) + 1

    def row(self) -> str:
        done = len(self.latencies_ms)
        lat = self.latencies_ms or [float("nan")]
        return (
            f"{self.name:<9}{self.concurrency:>5}{self.seconds:>7.0f}{done:>8}{done / self.seconds:>9.1f}"
            f"{self.new_studies / self.seconds:>8.1f}{statistics.median(lat):>8.0f}{percentile(lat, 0.95):>8.0f}"
            f"{percentile(lat, 0.99):>8.0f}{self.errors:>7}{100 * self.findings / max(done, 1):>9.1f}"
        )


class StudyPool:
    """DICOM files in the service's image folder: ``repeated`` ones and a queue of never-seen ones."""

    def __init__(self, folder: Path, repeated: int, new: int) -> None:
        self.folder = folder
        bases = [pydicom.dcmread(write_sample_study(folder / "bases", seed=500 + i)) for i in range(4)]
        self.repeated = [self._clone(bases[i % len(bases)], f"repeated-{i}") for i in range(repeated)]
        self._new = [self._clone(bases[i % len(bases)], f"new-{i}") for i in range(new)]
        self.new_taken = 0

    def _clone(self, base: pydicom.Dataset, name: str) -> pydicom.Dataset:
        """The base study under fresh Study/Series/SOP Instance UIDs (a study the service has not seen)."""
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(self.folder / f"{name}.dcm", enforce_file_format=True)
        del ds.PixelData  # the clients only need the header (for the ImagingStudy in prefetch)
        return ds

    @property
    def exhausted(self) -> bool:
        return self.new_taken >= len(self._new)

    def take_new(self) -> pydicom.Dataset | None:
        if self.exhausted:
            return None
        self.new_taken += 1
        return self._new[self.new_taken - 1]


class Clients:
    """Signed hook requests against one service URL, with the study in prefetch."""

    def __init__(self, url: str, private_key: bytes, issuer: str, folder: Path) -> None:
        self.url, self.key, self.issuer, self.store = url, private_key, issuer, folder.as_uri()
        self.templates = {service: load_example(name) for service, name in HOOKS.items()}
        self.all_hooks = itertools.cycle(HOOKS)
        self.order_hooks = itertools.cycle(list(HOOKS)[:2])

    async def send(
        self, client: httpx.AsyncClient, study: pydicom.Dataset, new: bool = False
    ) -> tuple[float, bool, str | None, list[str]]:
        """One hook; returns (latency ms, finding card?, error kind or None, the cards' uuids).

        A new study goes with an order hook (they wait for the analysis, up to the hook deadline);
        patient-view only starts one and answers at once, so it would not measure analyses per second.
        """
        service = next(self.order_hooks if new else self.all_hooks)
        template = self.templates[service]
        bundle = imaging_study_bundle(study, template["context"]["patientId"], self.store)
        path = f"/cds-services/{service}"
        token = sign_request_jwt(self.key, self.issuer, self.url + path)
        started = time.perf_counter()
        try:
            response = await client.post(
                self.url + path, json=with_studies(template, bundle), headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            return 1000 * (time.perf_counter() - started), False, type(exc).__name__, []
        elapsed = 1000 * (time.perf_counter() - started)
        if response.status_code != 200:
            return elapsed, False, f"HTTP {response.status_code}", []
        cards = response.json().get("cards", [])
        finding = bool(cards) and "analysis" not in cards[0]["summary"].lower()
        return elapsed, finding, None, [card["uuid"] for card in cards if card.get("uuid")]


async def run_phase(clients: Clients, pool: StudyPool, phase: Phase, seconds: float, new_share: float) -> None:
    """``phase.concurrency`` clients for ``seconds``; each request is a new study with probability ``new_share``."""
    rng = random.Random(f"{phase.name}-{phase.concurrency}")
    limits = httpx.Limits(max_connections=phase.concurrency, max_keepalive_connections=phase.concurrency)
    stop = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            study = pool.take_new() if rng.random() < new_share else None
            phase.new_studies += study is not None
            phase.record(*await clients.send(client, study or rng.choice(pool.repeated), study is not None))

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(phase.concurrency)))
    phase.seconds = time.perf_counter() - started


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the service did not become ready (see its log)")


@dataclass
class Fault:
    """What the fault phase found once PostgreSQL was back: the cards issued and those in the table."""

    outage_s: float
    issued: int = 0
    stored: int = 0
    restarted_at: float = float("nan")  # perf_counter() when PostgreSQL answered again
    drained_s: float = float("nan")  # outbox empty this long after that

    @property
    def lost(self) -> int:
        return self.issued - self.stored


@dataclass
class Giants:
    """The giant-image phase: the service's RSS (MiB) at rest after a normal hook, and its peak."""

    phase: Phase
    rss_normal: float = 0.0
    rss_peak: float = 0.0


async def benchmark(args: argparse.Namespace, root: Path) -> None:
    base = Settings()
    # Enough never-seen studies for 25 new/s in each new phase and 12 new/s in the soak (10 % of up to
    # 120 hooks/s), 4 new/s in the fault phase (10 % at concurrency 8), 5.6 MB each on disk.
    fault_seconds = args.outage_seconds + 2 * args.fault_margin
    pool_size = int(25 * args.seconds * args.rounds + 12 * args.soak_seconds + 4 * fault_seconds) + 50
    print(f"Writing {args.repeated} repeated, {pool_size} new and {GIANTS} giant studies …", flush=True)
    pool = StudyPool(root / "store", args.repeated, pool_size)
    giants = write_giants(root / "store")
    if not postgres_available():
        raise SystemExit("PostgreSQL is not installed (run .ci/install-servers.sh)")
    postgres = PostgresServer()
    postgres.start()
    triton = TritonServer.on_free_ports(base, root / "triton")
    triton.start(timeout_s=180)
    ensure_keypair(root / "private.pem", root / "public.pem")
    port = free_port()
    env = {
        **os.environ,
        "HIPCAD_HOST": "127.0.0.1",
        "HIPCAD_PORT": str(port),
        "HIPCAD_PUBLIC_BASE_URL": "",
        "HIPCAD_TRITON_URL": triton.grpc_url,
        "HIPCAD_DICOM_FOLDER": str(root / "store"),
        "HIPCAD_FEEDBACK_DB": str(root / "store.sqlite3"),  # unused, but the outbox goes beside it
        "HIPCAD_DATABASE_URL": postgres.url,
        "HIPCAD_VIEWER_SECRET": "bench-load-viewer-secret",
        "HIPCAD_JTI_STRICT": "false",
        "HIPCAD_JWT_PUBLIC_KEY_FILE": str(root / "public.pem"),
        "HIPCAD_LOG_LEVEL": "WARNING",
    }
    log = (root / "service.log").open("wb")
    service = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "cds-service"), "serve", env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        clients = Clients(url, (root / "private.pem").read_bytes(), base.jwt_issuer, root / "store")
        for study in pool.repeated:  # analyse the repeated studies once (and warm Triton)
            for _ in HOOKS:
                await hook_once(clients, study)
        phases = []
        for _ in range(args.rounds):
            repeated, new = Phase("repeated", args.concurrency), Phase("new", args.concurrency)
            await run_phase(clients, pool, repeated, args.seconds, new_share=0.0)
            await run_phase(clients, pool, new, args.seconds, new_share=1.0)
            phases += [repeated, new]
        soak = Phase("soak", args.soak_concurrency)
        rss_before = rss_mib(service.pid)
        await run_phase(clients, pool, soak, args.soak_seconds, new_share=0.1)
        rss_after = rss_mib(service.pid)
        phases.append(soak)
        fault = await fault_phase(args, clients, pool, postgres, phases)
        giant_run = await giant_phase(clients, pool, giants, service.pid)
        phases.append(giant_run.phase)
    finally:
        service.terminate()
        await service.wait()
        triton.stop()
        postgres.stop()
        postgres.remove()
        log.close()
    report(args, phases, rss_before, rss_after, pool, fault, giant_run)


def write_giants(folder: Path) -> list[pydicom.Dataset]:
    """``GIANTS`` copies of the blank giant radiograph, each its own study (no result is shared)."""
    bomb = giant("blank")
    headers = []
    for i in range(GIANTS):
        bomb.StudyInstanceUID, bomb.SeriesInstanceUID = generate_uid(), generate_uid()
        bomb.SOPInstanceUID = bomb.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        bomb.save_as(folder / f"giant-{i}.dcm", enforce_file_format=True)
        headers.append(pydicom.dcmread(folder / f"giant-{i}.dcm", stop_before_pixels=True))
    return headers


async def fault_phase(
    args: argparse.Namespace, clients: Clients, pool: StudyPool, postgres: PostgresServer, phases: list[Phase]
) -> Fault:
    """The soak's mix while PostgreSQL is stopped mid-phase; then the cards issued against the table."""
    phase = Phase("fault", args.concurrency)
    fault = Fault(args.outage_seconds)

    async def outage() -> None:
        await asyncio.sleep(args.fault_margin)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(args.outage_seconds)
        await asyncio.to_thread(postgres.start)
        fault.restarted_at = time.perf_counter()

    seconds = args.outage_seconds + 2 * args.fault_margin
    await asyncio.gather(run_phase(clients, pool, phase, seconds, new_share=0.1), outage())
    phases.append(phase)
    for _ in range(240):  # the outbox replayed into PostgreSQL (at most 2 min)
        if not await outbox_entries(clients.url):
            break
        await asyncio.sleep(0.5)
    fault.drained_s = time.perf_counter() - fault.restarted_at
    uuids = sorted(set(phase.card_uuids))
    fault.issued = len(uuids)
    engine = engine_for(postgres.url)
    try:
        with engine.connect() as db:
            stored = db.execute(select(schema.card.c.uuid).where(schema.card.c.uuid.in_(uuids))).scalars()
            fault.stored = len(set(stored))
    finally:
        engine.dispose()
    return fault


async def outbox_entries(url: str) -> float:
    """``hipcad_store_outbox_entries`` from the service's /metrics (writes not yet in the database)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hipcad_store_outbox_entries":
                return sample.value
    raise RuntimeError("/metrics has no hipcad_store_outbox_entries")


async def giant_phase(clients: Clients, pool: StudyPool, giants: list[pydicom.Dataset], pid: int) -> Giants:
    """A normal hook and 2 s at rest (the working set), then the giant images 0.15 s apart, RSS sampled."""
    run = Giants(Phase("giant", GIANTS))
    await hook_once(clients, pool.repeated[0])
    rest = time.perf_counter() + 2
    samples = []
    while time.perf_counter() < rest:
        samples.append(rss_mib(pid))
        await asyncio.sleep(0.05)
    run.rss_normal = max(samples)
    done = asyncio.Event()

    async def sample_rss() -> None:
        while not done.is_set():
            run.rss_peak = max(run.rss_peak, rss_mib(pid))
            await asyncio.sleep(0.05)

    async def one(client: httpx.AsyncClient, study: pydicom.Dataset, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        run.phase.record(*await clients.send(client, study, new=True))

    sampler = asyncio.create_task(sample_rss())
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=GIANTS)) as client:
        await asyncio.gather(*(one(client, study, 0.15 * i) for i, study in enumerate(giants)))
    run.phase.seconds = time.perf_counter() - started
    await asyncio.sleep(0.3)
    done.set()
    await sampler
    return run


async def hook_once(clients: Clients, study: pydicom.Dataset) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        _, _, error, _ = await clients.send(client, study)
    if error:
        raise RuntimeError(f"warm-up hook failed: {error}")


def report(
    args: argparse.Namespace,
    phases: list[Phase],
    rss_before: float,
    rss_after: float,
    pool: StudyPool,
    fault: Fault,
    giants: Giants,
) -> None:
    print(
        f"\nLoad on loopback, one service process (PostgreSQL store) + local Triton (CPU), on {cpu_model()} "
        f"({os.cpu_count()} cores)\n"
    )
    header = f"{'phase':<9}{'conc':>5}{'s':>7}{'hooks':>8}{'hooks/s':>9}{'new/s':>8}"
    print(header + f"{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'errors':>7}{'finding%':>9}")
    for phase in phases:
        print(phase.row())
        if phase.error_kinds:
            print(f"{'':<9}errors: {phase.error_kinds}")
    growth = 100 * (rss_after - rss_before) / rss_before
    print(
        f"\nservice RSS over the {args.soak_seconds:.0f} s soak: {rss_before:.0f} → {rss_after:.0f} MiB "
        f"({growth:+.1f} %)"
    )
    print(
        f"fault: PostgreSQL stopped {fault.outage_s:.0f} s; {fault.issued} cards issued, {fault.stored} in the card "
        f"table, outbox empty {fault.drained_s:.1f} s after PostgreSQL was back"
    )
    print(
        f"giant: {GIANTS} giant images; service RSS {giants.rss_normal:.0f} MiB at rest → peak "
        f"{giants.rss_peak:.0f} MiB (+{giants.rss_peak - giants.rss_normal:.0f} MiB)"
    )
    if pool.exhausted:
        print("note: the pool of new studies ran out; new-study figures are a lower bound")
    repeated = [p for p in phases if p.name == "repeated"]
    new = [p for p in phases if p.name == "new"]
    if len(new) > 1:
        print(f"\nspread over {len(new)} rounds (min / median / max):")
        for name, rounds in (("repeated", repeated), ("new", new)):
            rates = [len(p.latencies_ms) / p.seconds for p in rounds]
            p99s = [percentile(p.latencies_ms, 0.99) for p in rounds]
            print(f"  {name:<9}hooks/s {_spread(rates)}   p99 ms {_spread(p99s)}")
    load = [p for p in phases if p.name in ("repeated", "new", "soak") and p.latencies_ms]
    worst_p99 = max(percentile(p.latencies_ms, 0.99) for p in load)
    print("\ntarget (worst round)                    measured      met")
    checks = [
        ("repeated hooks/s at conc 8  ≥ 20", min(len(p.latencies_ms) / p.seconds for p in repeated), 20, True),
        ("new studies/s at conc 8     ≥ 8", min(p.new_studies / p.seconds for p in new), 8, True),
        ("p99 ms (repeated/new/soak)  ≤ 1000", worst_p99, 1000, False),
        ("errors (all phases)         = 0", sum(p.errors for p in phases), 0, False),
        ("RSS growth % over the soak  ≤ 10", growth, 10, False),
        ("cards lost (PG stopped)     = 0", fault.lost, 0, False),
        (f"giant RSS MiB over rest     ≤ {RSS_BOUND_MIB}", giants.rss_peak - giants.rss_normal, RSS_BOUND_MIB, False),
    ]
    for label, value, limit, at_least in checks:
        met = value >= limit if at_least else value <= limit
        print(f"{label:<40}{value:>8.1f}      {'yes' if met else 'NO'}")


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="length of the repeated and new phases")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--soak-seconds", type=float, default=60)
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument("--repeated", type=int, default=6, help="studies analysed once and then asked again")
    parser.add_argument("--rounds", type=int, default=1, help="times the repeated and new phases run (the spread)")
    parser.add_argument("--outage-seconds", type=float, default=30, help="how long PostgreSQL is stopped")
    parser.add_argument("--fault-margin", type=float, default=10, help="fault phase's load before and after it")
    parser.add_argument("--quick", action="store_true", help="5 s phases, 10 s soak, 5 s fault margins")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.soak_seconds, args.fault_margin = 5, 10, 5
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(benchmark(args, Path(tmp)))


if __name__ == "__main__":
    main()
