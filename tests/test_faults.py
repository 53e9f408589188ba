"""Faults survived, on the real servers: Triton killed under load, Orthanc down, a FHIR server slow or failing,
PostgreSQL stopped or frozen, a replica killed while it holds an analysis lease.

* Triton: a dedicated real Triton and a real ``cds-service serve`` process; Triton is SIGKILLed while
  several hooks for new studies are in flight, then started again on the same ports.
* Orthanc: a dedicated real Orthanc, killed and started again (a PACS that hangs or refuses our
  credentials is ``features/pacs_down.feature``).
* FHIR: :class:`~tests.servers.fhir_stand_in.SlowFhirStandIn`, since a real FHIR server cannot be
  made to fail on cue; nothing is prefetched, so the service must search it.
* PostgreSQL: a dedicated real PostgreSQL shared by two real replicas, stopped or frozen (SIGSTOP)
  under hook and feedback traffic; afterwards every card is in the ``card`` table, every feedback
  joins its card, every viewer link opens on both replicas (the outbox, ``cds_service.store.durable``).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from cds_service.app import create_app
from cds_service.cdshooks.conformance import check_response
from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import TritonServer
from cds_service.settings import Settings
from cds_service.store import schema
from cds_service.store.sql import SqlStore, engine_for
from cds_service.training.phantoms import write_sample_study
from tests.cdshooks.test_conformance import feedback_body
from tests.conftest import require, started_triton
from tests.servers.fhir_stand_in import SlowFhirStandIn
from tests.servers.orthanc import OrthancServer
from tests.servers.postgres import PostgresServer
from tests.servers.postgres import available as postgres_available
from tests.test_end_to_end import post
from tests.test_outbox import frozen, thaw
from tests.test_replicas import PATH, PUBLIC, Replica, replica_env, start_replica

MARGIN_S = 1.0  # loopback, a loaded 2-core machine: what an answer may take beyond its deadline


def sample(metrics: str, name: str, **labels: str) -> float:
    """One sample's value in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def study_request(path: Path, address: str) -> dict:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    template = load_example("order-select.json")
    return with_studies(template, imaging_study_bundle(ds, template["context"]["patientId"], address))


def is_finding(body: dict) -> bool:
    """One card, and it reports a finding (not "analysis in progress" or "analysis unavailable")."""
    return len(body["cards"]) == 1 and "analysis" not in body["cards"][0]["summary"].lower()


def is_honest(body: dict) -> bool:
    """One ``info`` card saying the AI did not read the images (unavailable, or still in progress)."""
    (card,) = body["cards"]
    summary = card["summary"].lower()
    return card["indicator"] == "info" and ("unavailable" in summary or "in progress" in summary)


@pytest.fixture(scope="module")
def own_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A Triton of this module's own: the tests kill it."""
    with started_triton(tmp_path_factory.mktemp("fault-triton")) as server:
        yield server


# Triton killed while hooks are in flight -------------------------------------------------------------
DEADLINE_S = 3.0


@pytest.mark.triton
@pytest.mark.slow
def test_triton_killed_under_load_every_hook_answered_and_the_service_recovers_by_itself(
    own_triton: TritonServer, ehr_keys, tmp_path: Path
):
    folder = tmp_path / "images"
    in_flight, while_down = range(401, 407), range(407, 411)  # new studies: hooks when Triton dies, while it is down
    paths = {seed: write_study(folder, seed) for seed in (*in_flight, *while_down)}  # before the service indexes
    service = start_replica(
        "fault-service",
        {
            "HIPCAD_HOST": "127.0.0.1",
            "HIPCAD_JWT_PUBLIC_KEY_FILE": str(ehr_keys[1]),
            "HIPCAD_DICOM_FOLDER": str(folder),
            "HIPCAD_FEEDBACK_DB": str(tmp_path / "store.sqlite3"),
            "HIPCAD_DATABASE_URL": "",
            "HIPCAD_TRITON_URL": own_triton.grpc_url,
            "HIPCAD_HOOK_DEADLINE_S": str(DEADLINE_S),
            "HIPCAD_TRITON_TIMEOUT_S": str(2 * DEADLINE_S),  # as by default: an analysis may outlive its hook
        },
        tmp_path / "service.log",
    )
    requests = {seed: study_request(path, folder.as_uri()) for seed, path in paths.items()}
    hooks = ConcurrentHooks(service, ehr_keys[0], requests)
    try:
        pending = hooks.send(in_flight)
        wait_for(lambda: inferences(own_triton) >= 1, 60, "Triton never ran an inference")
        os.killpg(own_triton.process.pid, signal.SIGKILL)  # the python-backend stubs too
        own_triton.process.wait(10)
        assert httpx.get(service.url + "/healthz", timeout=10).status_code == 200  # alive: no restart loop
        answers = hooks.answers(pending)
        assert any(not is_finding(body) for body in answers.values()), "nothing was in flight when Triton died"
        answers = hooks.answers(hooks.send(while_down))
        assert not any(is_finding(body) for body in answers.values())

        # Every analysis ends, as finished (stored) or failed (counted): none is silently lost.
        wait_for(lambda: sample(metrics(service), "hipcad_analyses_in_flight") == 0, 30, "analyses still running")
        text = metrics(service)
        started, finished, failed = (
            sample(text, "hipcad_analyses_total", event=event) for event in ("started", "finished", "failed")
        )
        assert started == finished + failed and failed >= 1, text
        assert sample(text, "hipcad_triton_errors_total", code="UNAVAILABLE") >= 1, text

        # Triton back on the same ports: ready again without touching the service.
        own_triton.start(timeout_s=120)
        # Readiness never left 200 (a dependency down degrades answers, not readiness); the dependency
        # monitor sees Triton again.
        wait_for(
            lambda: "triton" not in httpx.get(service.url + "/readyz", timeout=5).json()["degraded"],
            30,
            "/readyz still lists Triton as degraded",
        )
        for seed in requests:  # the stored results are cache hits; the failed and refused studies are analysed now
            body = hooks.one(seed)
            assert is_finding(body), (seed, body)
        assert inferences(own_triton) == len(requests) - finished  # exactly those without a stored result
    finally:
        service.process.stop()
        hooks.pool.shutdown(cancel_futures=True)
        if own_triton.process is None or own_triton.process.poll() is not None:
            own_triton.start(timeout_s=120)


class ConcurrentHooks:
    """Signed order-select hooks (a fresh JWT and hookInstance each) sent to a ``cds-service serve`` process."""

    def __init__(self, service: Replica, private_key: bytes, requests: dict[int, dict]) -> None:
        self.service = service
        self.private_key = private_key
        self.requests = requests
        self.pool = ThreadPoolExecutor(8)
        # Wall-clock (sent, answered) per seed, printed when a hook is late: compare with the service
        # log's access-line "ts" and "duration_ms" to see whether the time was spent in the service.
        self.walls: dict[int, tuple[float, float]] = {}

    def _post(self, seed: int) -> tuple[httpx.Response, float]:
        request = with_studies(self.requests[seed], self.requests[seed]["prefetch"]["studies"])
        jwt = sign_request_jwt(self.private_key, "hipcad-demo-ehr", self.service.url + PATH)
        started, wall = time.perf_counter(), time.time()
        response = self.service.post(PATH, request, jwt)
        self.walls[seed] = (wall, time.time())
        return response, time.perf_counter() - started

    def send(self, seeds: Iterable[int]) -> dict[int, Future[tuple[httpx.Response, float]]]:
        """Hooks for ``seeds``, all at once."""
        return {seed: self.pool.submit(self._post, seed) for seed in seeds}

    def answers(self, pending: dict[int, Future[tuple[httpx.Response, float]]]) -> dict[int, dict]:
        """Each hook's body, once it is checked: HTTP 200 within the deadline, a conformant card that is
        either a finding or an honest "unavailable" / "in progress"."""
        bodies = {}
        for seed, future in pending.items():
            response, elapsed = future.result(60)
            assert response.status_code == 200, (seed, response.text)
            assert elapsed < DEADLINE_S + MARGIN_S, (seed, elapsed, self.walls.get(seed))
            body = bodies[seed] = response.json()
            assert check_response(body) == [] and (is_finding(body) or is_honest(body)), body
        return bodies

    def one(self, seed: int) -> dict:
        return self.answers(self.send([seed]))[seed]


def write_study(folder: Path, seed: int) -> Path:
    return write_sample_study(folder, seed=seed)


def metrics(replica: Replica) -> str:
    return httpx.get(replica.url + "/metrics", timeout=10).text


def inferences(triton: TritonServer) -> int:
    """Requests the ensemble has executed since this Triton started (its statistics API)."""
    url = f"http://127.0.0.1:{triton.http_port}/v2/models/hip_analysis/stats"
    stats = httpx.get(url, timeout=10).json()["model_stats"]
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{what} (after {timeout_s:.0f} s)")


# Orthanc down ---------------------------------------------------------------------------------------
@pytest.mark.triton
@pytest.mark.slow
def test_orthanc_down_gets_an_honest_card_in_time_and_its_return_a_finding(
    own_triton: TritonServer, service_settings: Settings, ehr_keys, tmp_path: Path
):
    require(OrthancServer.installed(), "Orthanc is not installed (run .ci/install-servers.sh)")
    orthanc = OrthancServer(tmp_path / "orthanc").start()
    try:
        path = write_study(tmp_path / "images", seed=411)
        orthanc.upload(path.read_bytes())
        settings = service_settings.model_copy(
            update={
                "triton_url": own_triton.grpc_url,
                "dicomweb_allowed_bases": [orthanc.dicomweb_url],
                "dicomweb_credentials": {
                    orthanc.dicomweb_url: {"username": orthanc.user, "password": orthanc.password}
                },
                "dicomweb_timeout_s": 1.0,
                "hook_deadline_s": DEADLINE_S,
            }
        )
        request = study_request(path, orthanc.dicomweb_url)
        with TestClient(create_app(settings), base_url=settings.base_url()) as client:
            orthanc.process.stop()  # SIGKILL: the port refuses connections
            started = time.perf_counter()
            response = post(client, ehr_keys[0], request)
            assert response.status_code == 200 and time.perf_counter() - started < DEADLINE_S + MARGIN_S
            body = response.json()
            assert check_response(body) == [] and is_honest(body), body
            assert "unavailable" in body["cards"][0]["summary"]

            orthanc.start()  # the same port and storage: the PACS is back
            again = post(client, ehr_keys[0], with_studies(request, request["prefetch"]["studies"]))
            assert again.status_code == 200 and is_finding(again.json()), again.text  # the failure was not kept
    finally:
        orthanc.stop()


# FHIR server slow or answering 500 ------------------------------------------------------------------
FHIR_TIMEOUT_S = 1.0


@pytest.fixture
def fhir_service(service_settings: Settings) -> Iterator[Callable[[str], TestClient]]:
    """The app (in-process) allowed to search ``url`` with a short FHIR timeout; no Triton is reached."""
    clients: list[TestClient] = []

    def make(url: str) -> TestClient:
        settings = service_settings.model_copy(
            update={"fhir_allowed_bases": [url], "fhir_timeout_s": FHIR_TIMEOUT_S, "hook_deadline_s": DEADLINE_S}
        )
        client = TestClient(create_app(settings), base_url=settings.base_url())
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def searching_request(fhir_base: str) -> dict:
    """An order-select hook with nothing prefetched about studies: the service must search ``fhir_base``."""
    request = load_example("order-select.json")
    request.pop("prefetch")
    request.update(
        hookInstance=str(uuid.uuid4()),
        fhirServer=fhir_base,
        fhirAuthorization={
            "access_token": "ehr-issued-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/ImagingStudy.read patient/Endpoint.read",
            "subject": "hipcad-cds-service",
        },
    )
    return request


def timed_search(
    fhir_service: Callable[[str], TestClient], ehr_keys, stand_in: SlowFhirStandIn
) -> tuple[httpx.Response, float]:
    """Serve ``stand_in``, send one hook that must search it; the answer and its latency (s)."""
    with stand_in.running() as fhir:
        client = fhir_service(fhir.url)
        started = time.perf_counter()
        response = post(client, ehr_keys[0], searching_request(fhir.url))
        return response, time.perf_counter() - started


def answered_412(response: httpx.Response) -> str:
    """CDS Hooks 2.0: 412 when the service cannot get the FHIR data it needs; the OperationOutcome's text."""
    assert response.status_code == 412, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "not-found"
    return body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("status", [500, 503])
def test_a_fhir_server_answering_an_error_is_a_prompt_412(fhir_service, ehr_keys, status: int):
    fhir = SlowFhirStandIn(status=status)
    response, elapsed = timed_search(fhir_service, ehr_keys, fhir)
    assert answered_412(response) == f"FHIR server answered HTTP {status}"
    assert elapsed < MARGIN_S and len(fhir.hits) == 1  # asked once, not retried into the deadline
    assert fhir.hits[0].startswith("/fhir/ImagingStudy?")


@pytest.mark.parametrize(
    "stand_in",
    [SlowFhirStandIn(delay_s=4 * FHIR_TIMEOUT_S), SlowFhirStandIn(trickle_s=FHIR_TIMEOUT_S / 4)],
    ids=["silent", "trickling"],
)
def test_a_slow_fhir_server_is_given_up_on_at_the_fhir_timeout(fhir_service, ehr_keys, stand_in: SlowFhirStandIn):
    """Silent: nothing for 4 timeouts. Trickling: a valid Bundle, a few bytes every quarter timeout, so
    no single read waits a whole timeout; the timeout is for the request, not for each read."""
    response, elapsed = timed_search(fhir_service, ehr_keys, stand_in)
    assert "FHIR server unreachable" in answered_412(response)
    assert FHIR_TIMEOUT_S * 0.9 < elapsed < FHIR_TIMEOUT_S + MARGIN_S, elapsed


def test_a_fhir_search_of_many_slow_requests_is_bounded_by_the_hook_deadline(fhir_service, ehr_keys):
    """Each request answers within the FHIR timeout, but the search needs seven of them (the Bundle, then
    six Endpoints it references): together they would take 1.9 deadlines; the hook answers at one."""
    studies = [
        {
            "resource": {
                "resourceType": "ImagingStudy",
                "id": f"study-{i}",
                "status": "available",
                "subject": {"reference": "Patient/any"},
                "endpoint": [{"reference": f"Endpoint/pacs-{i}"}],
            }
        }
        for i in range(6)
    ]
    body = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": studies}).encode()
    fhir = SlowFhirStandIn(delay_s=0.8 * FHIR_TIMEOUT_S, body=body)
    response, elapsed = timed_search(fhir_service, ehr_keys, fhir)
    assert "within the hook deadline" in answered_412(response)
    assert DEADLINE_S * 0.9 < elapsed < DEADLINE_S + MARGIN_S, elapsed
    assert 1 < len(fhir.hits) < 7  # it got part of the way, then gave up


# PostgreSQL stopped or frozen, Triton killed, a lease holder killed: two replicas, one PostgreSQL --------
OUTAGE_DEADLINE_S = 8.0
LEASE_BOUND_S = 10.0  # a study whose lease holder died answers on another replica within this


@dataclass
class SharedCluster:
    """Replicas sharing one PostgreSQL of this module's own; they are sent signed hooks and feedback."""

    postgres: PostgresServer
    folder: Path
    private_key: bytes
    env: dict[str, str]
    logs: Path
    replicas: list[Replica] = field(default_factory=list)

    def start(self, name: str, **env: str) -> Replica:
        replica = start_replica(name, {**self.env, **env}, self.logs / f"{name}.log")
        self.replicas.append(replica)
        return replica

    def token(self, path: str = PATH) -> str:
        return sign_request_jwt(self.private_key, "hipcad-demo-ehr", PUBLIC + path)

    def hook(self, replica: Replica, seed: int) -> tuple[dict, float]:
        """One order-select hook for the phantom ``seed`` (a fresh hookInstance and JWT): its body, its latency."""
        request = study_request(self.folder / f"sample-{seed}.dcm", self.folder.as_uri())
        started = time.perf_counter()
        response = replica.post(PATH, request, self.token())
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        body = response.json()
        assert check_response(body) == [], body
        return body, elapsed

    def feedback(self, replica: Replica, card: dict) -> httpx.Response:
        path = PATH + "/feedback"
        if card.get("suggestions"):
            body = feedback_body(card["uuid"], card["suggestions"][0]["uuid"])
        else:
            body = {"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": STAMP}]}
        return replica.post(path, body, self.token(path))

    def sql(self) -> SqlStore:
        return SqlStore(engine_for(self.postgres.url))

    def drained(self) -> bool:
        """Every live replica's outbox is empty (its metric), so the database holds everything."""
        live = [r for r in self.replicas if r.process.process and r.process.process.poll() is None]
        return all(sample(metrics(r), "hipcad_store_outbox_entries") == 0 for r in live)


STAMP = "2026-11-22T10:00:00+00:00"


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own: the tests stop and freeze it."""
    require(postgres_available(), "PostgreSQL is not installed (run .ci/install-servers.sh)")
    server = PostgresServer()
    server.start()
    yield server
    thaw(server)
    server.stop()
    server.remove()


def shared_cluster(postgres: PostgresServer, triton: TritonServer, ehr_keys, folder: Path, logs: Path) -> SharedCluster:
    env = replica_env(postgres.url, ehr_keys[1], folder, triton.grpc_url, logs, hook_deadline_s=OUTAGE_DEADLINE_S)
    return SharedCluster(postgres, folder, ehr_keys[0], env, logs)


@pytest.fixture(scope="module")
def outage_cluster(
    own_postgres: PostgresServer, triton: TritonServer, ehr_keys, tmp_path_factory
) -> Iterator[SharedCluster]:
    folder = tmp_path_factory.mktemp("outage-images")
    for seed in range(501, 512):  # before the replicas index the folder
        write_study(folder, seed)
    cluster = shared_cluster(own_postgres, triton, ehr_keys, folder, tmp_path_factory.mktemp("outage-logs"))
    try:
        cluster.start("outage-1")
        cluster.start("outage-2")
        yield cluster
    finally:
        for replica in cluster.replicas:
            replica.process.stop()


def count(sql: SqlStore, table) -> int:
    with sql.engine.connect() as db:
        return int(db.execute(select(func.count()).select_from(table)).scalar())


@pytest.mark.triton
@pytest.mark.slow
def test_postgresql_stopped_under_hook_and_feedback_traffic_loses_no_card_feedback_result_or_link(
    outage_cluster: SharedCluster,
):
    first, second = outage_cluster.replicas[:2]
    sql = outage_cluster.sql()
    body, _ = outage_cluster.hook(first, 501)  # stored before the outage
    assert is_finding(body), body
    results_before = count(sql, schema.result)
    cards: list[dict] = []
    outage_cluster.postgres.stop()
    try:
        for replica, seed in ((first, 501), (first, 502), (second, 503), (second, 501), (first, 504), (second, 502)):
            body, elapsed = outage_cluster.hook(replica, seed)
            assert is_finding(body) and elapsed < OUTAGE_DEADLINE_S + MARGIN_S, (seed, elapsed, body)
            cards.append(body["cards"][0])
        for n, card in enumerate(cards):  # each card's feedback sent to the replica that did not issue it
            response = outage_cluster.feedback(second if n % 2 == 0 else first, card)
            assert response.status_code == 200, response.text  # kept in the outbox: nothing to retry
        assert sample(metrics(first), "hipcad_store_outbox_entries") > 0
    finally:
        outage_cluster.postgres.start()
    wait_for(outage_cluster.drained, 30, "the outboxes were not replayed")

    uuids = [card["uuid"] for card in cards]
    with sql.engine.connect() as db:
        stored = set(db.execute(select(schema.card.c.uuid).where(schema.card.c.uuid.in_(uuids))).scalars())
        joined = set(
            db.execute(
                select(schema.feedback.c.card)
                .select_from(schema.feedback.join(schema.card, schema.card.c.uuid == schema.feedback.c.card))
                .where(schema.card.c.uuid.in_(uuids))
            ).scalars()
        )
    assert stored == set(uuids), "cards issued during the outage are missing from the card table"
    assert joined == set(uuids), "feedback given during the outage is not joined with its card"
    assert count(sql, schema.result) >= results_before + 3  # 502, 503, 504 were analysed during the outage
    for card in cards:
        (link,) = [link for link in card["links"] if link["type"] == "absolute"]
        for replica in (first, second):  # issued by either replica: opens on both after the replay
            page = httpx.get(replica.url + link["url"].removeprefix(PUBLIC), timeout=30)
            assert page.status_code == 200, (replica.name, page.status_code)
    sql.close()


@pytest.mark.triton
@pytest.mark.slow
def test_postgresql_frozen_every_hook_answers_within_its_deadline_and_nothing_is_lost(
    outage_cluster: SharedCluster,
):
    first, second = outage_cluster.replicas[:2]
    outage_cluster.hook(first, 505)  # stored before the freeze
    latencies: dict[tuple[str, int], float] = {}
    cards: list[dict] = []
    with frozen(outage_cluster.postgres):
        for replica, seed in ((first, 505), (second, 505), (first, 506), (second, 507), (first, 506)):
            body, elapsed = outage_cluster.hook(replica, seed)
            latencies[(replica.name, seed)] = elapsed
            cards.extend(body["cards"])
    assert max(latencies.values()) < OUTAGE_DEADLINE_S + MARGIN_S, latencies
    wait_for(outage_cluster.drained, 30, "the outboxes were not replayed after the thaw")
    sql = outage_cluster.sql()
    with sql.engine.connect() as db:
        uuids = [card["uuid"] for card in cards]
        stored = set(db.execute(select(schema.card.c.uuid).where(schema.card.c.uuid.in_(uuids))).scalars())
    assert stored == set(uuids)
    sql.close()
    print("frozen PostgreSQL, hook latency (s):", {f"{k[0]}/{k[1]}": round(v, 2) for k, v in latencies.items()})


@pytest.mark.triton
@pytest.mark.slow
def test_a_replica_killed_while_holding_a_lease_blocks_the_study_at_most_ten_seconds(
    outage_cluster: SharedCluster,
):
    survivor = outage_cluster.replicas[1]
    sql = outage_cluster.sql()
    for seed in (508, 509, 510):  # the holder must die mid-analysis: retried if it finished first
        doomed = outage_cluster.start(f"doomed-{seed}")
        results = count(sql, schema.result)
        pool = ThreadPoolExecutor(1)
        pool.submit(outage_cluster.hook, doomed, seed)
        pid = doomed.process.process.pid
        wait_for(lambda pid=pid: leases_held(sql, pid) > 0, 60, "the doomed replica never took a lease")
        doomed.process.stop()  # SIGKILL while it holds the lease
        killed_at = time.perf_counter()
        pool.shutdown(wait=False)
        if leases_held(sql, pid) and count(sql, schema.result) == results:
            break
    else:
        pytest.fail("the doomed replica finished every analysis before it could be killed")
    body, _ = outage_cluster.hook(survivor, seed)
    blocked = time.perf_counter() - killed_at
    assert is_finding(body) and blocked < LEASE_BOUND_S, (blocked, body)
    sql.close()
    print(f"lease holder killed: the other replica answered {blocked:.1f} s after the kill")


def leases_held(sql: SqlStore, pid: int) -> int:
    """Live leases whose owner is the process ``pid`` (owners are ``host:pid:suffix``)."""
    with sql.engine.connect() as db:
        return int(
            db.execute(
                select(func.count())
                .select_from(schema.lease)
                .where(schema.lease.c.owner.like(f"%:{pid}:%"), schema.lease.c.expires_at > time.time())
            ).scalar()
        )


@pytest.mark.triton
@pytest.mark.slow
def test_triton_killed_stored_studies_are_still_answered_with_findings(
    own_triton: TritonServer, own_postgres: PostgresServer, ehr_keys, tmp_path: Path
):
    folder = tmp_path / "images"
    for seed in (521, 522):
        write_study(folder, seed)
    cluster = shared_cluster(own_postgres, own_triton, ehr_keys, folder, tmp_path)
    try:
        analysed, fresh = cluster.start("triton-a"), cluster.start("triton-b")
        body, _ = cluster.hook(analysed, 521)
        assert is_finding(body), body
        os.killpg(own_triton.process.pid, signal.SIGKILL)
        own_triton.process.wait(10)
        for replica in (analysed, fresh):  # "fresh" never read the models: the contract kept in the store
            body, elapsed = cluster.hook(replica, 521)
            assert is_finding(body) and elapsed < OUTAGE_DEADLINE_S + MARGIN_S, (replica.name, elapsed, body)
        body, _ = cluster.hook(fresh, 522)  # not stored: honestly unavailable
        assert is_honest(body), body
    finally:
        for replica in cluster.replicas:
            replica.process.stop()
        if own_triton.process is None or own_triton.process.poll() is not None:
            own_triton.start(timeout_s=120)
