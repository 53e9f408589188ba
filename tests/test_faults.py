"""Faults survived, on the real servers: Triton killed under load, Orthanc down, a FHIR server slow or failing.

* Triton: a dedicated real Triton and a real ``cds-service serve`` process; Triton is SIGKILLed while
  several hooks for new studies are in flight, then started again on the same ports.
* Orthanc: a dedicated real Orthanc, killed and started again (a PACS that hangs or refuses our
  credentials is ``features/pacs_down.feature``).
* FHIR: :class:`~tests.servers.fhir_stand_in.SlowFhirStandIn`, since a real FHIR server cannot be
  made to fail on cue; nothing is prefetched, so the service must search it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cds_service.app import create_app
from cds_service.cdshooks.conformance import check_response
from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import TritonServer
from cds_service.settings import Settings
from cds_service.training.phantoms import write_sample_study
from tests.conftest import require, started_triton
from tests.servers.fhir_stand_in import SlowFhirStandIn
from tests.servers.orthanc import OrthancServer
from tests.test_end_to_end import post
from tests.test_replicas import PATH, Replica, start_replica

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
        ready = httpx.get(service.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["triton"] is False
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
        wait_for(lambda: httpx.get(service.url + "/readyz", timeout=5).status_code == 200, 30, "/readyz stays 503")
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
