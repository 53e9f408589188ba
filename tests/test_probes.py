"""Probes with Kubernetes semantics, against a real ``cds-service serve`` and a real PostgreSQL.

* PostgreSQL stopped: liveness and readiness stay 200 (the outage is reported as ``degraded``, not as
  "take every pod out of the Service"), and hooks still answer with a card.
* PostgreSQL frozen (SIGSTOP of every postgres process, while hooks wait on it): ``/metrics``,
  ``/healthz`` and ``/readyz`` each answer within 1 s.
* ``serve`` started while PostgreSQL is down keeps retrying (JSON log lines, never a traceback) and
  comes up once PostgreSQL does; ``migrate`` gives up only when told to, with JSON lines too.

Triton is deliberately absent (a closed port): a shared dependency down must not fail readiness either.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import free_port
from tests.conftest import require
from tests.servers.base import ServerProcess
from tests.servers.postgres import PostgresServer, available

pytestmark = pytest.mark.slow

PATH = "/cds-services/hip-fracture-order-select"
CLI = str(Path(sys.executable).parent / "cds-service")
CHECK_INTERVAL_S = 0.5
PROBE_LIMIT_S = 1.0  # what a probe or a scrape may take, whatever the database does
DEADLINE_S = 5.0


@dataclass
class Service:
    url: str
    process: ServerProcess
    request: dict

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def hook(self) -> httpx.Response:
        return httpx.post(self.url + PATH, json=self.request, timeout=60)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"after {timeout_s:.0f} s: {what}")


def timed_get(service: Service, path: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = service.get(path)
    return response, time.perf_counter() - started


def store_status(service: Service) -> str:
    return service.get("/healthz").json()["dependencies"]["store"]["status"]


def postgres_pids(server: PostgresServer) -> list[int]:
    """The postmaster (first line of postmaster.pid) and all its children (the backends)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """PostgreSQL hung, not down: every process stopped (SIGSTOP), so connections open but never answer."""
    pids = postgres_pids(server)
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def json_lines(log: Path) -> list[dict]:
    """Every line of a log, each required to be one JSON object (no bare traceback, no plain text)."""
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return parsed


def unreachable_attempts(log: Path) -> int:
    return sum("database unreachable" in line["message"] for line in json_lines(log))


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own: the tests stop and freeze it."""
    require(available(), "PostgreSQL is not installed (run .ci/install-servers.sh)")
    server = PostgresServer()
    server.start()
    yield server
    server.stop()
    server.remove()


@pytest.fixture(scope="module")
def env(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("probe-store")
    return {
        **os.environ,
        "HIPCAD_HOST": "127.0.0.1",
        "HIPCAD_DATABASE_URL": postgres.url,
        "HIPCAD_VIEWER_SECRET": "probe-tests-key",
        "HIPCAD_JWT_REQUIRED": "false",  # authentication is not what these tests are about
        "HIPCAD_DICOM_FOLDER": str(folder),
        "HIPCAD_FEEDBACK_DB": str(folder / "unused.sqlite3"),
        "HIPCAD_TRITON_URL": f"127.0.0.1:{free_port()}",  # nothing listens: Triton is down throughout
        "HIPCAD_HOOK_DEADLINE_S": str(DEADLINE_S),
        "HIPCAD_DEPENDENCY_CHECK_INTERVAL_S": str(CHECK_INTERVAL_S),
        "HIPCAD_DATABASE_RETRY_MAX_S": "1",
        "HIPCAD_LOG_FORMAT": "json",
    }


def start_service(env: dict[str, str], log: Path, ready: Callable[[str], bool] | None = None) -> Service:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = ServerProcess("cds-service", [CLI, "serve"], log, env={**env, "HIPCAD_PORT": str(port)})
    process.start(
        (lambda: ready(url)) if ready else (lambda: httpx.get(url + "/startupz", timeout=2).status_code == 200), 90
    )
    return Service(url, process, {})


@pytest.fixture(scope="module")
def service(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from cds_service.training.phantoms import write_sample_study

    folder = Path(env["HIPCAD_DICOM_FOLDER"])
    path = write_sample_study(folder, seed=11)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    template = load_example("order-select.json")
    running = start_service(env, tmp_path_factory.mktemp("probe-logs") / "serve.log")
    running.request = with_studies(
        template, imaging_study_bundle(ds, template["context"]["patientId"], folder.as_uri())
    )
    yield running
    running.process.stop()


def test_probes_of_a_healthy_replica_with_triton_down(service: Service):
    wait_for(lambda: store_status(service) == "up", 10, "the store was never checked up")
    ready = service.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["degraded"] == ["triton"]  # reported, not a reason to leave the Service
    assert service.get("/startupz").status_code == 200
    assert 'hipcad_dependency_up{dependency="store"} 1.0' in service.get("/metrics").text


def test_postgresql_stopped_readiness_stays_and_hooks_still_answer(service: Service, postgres: PostgresServer):
    postgres.stop()
    try:
        wait_for(lambda: store_status(service) == "down", 10, "the store outage was never noticed")
        ready = service.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready" and ready.json()["degraded"] == ["store", "triton"]
        live = service.get("/healthz")
        assert live.status_code == 200 and live.json()["dependencies"]["store"]["status"] == "down"
        started = time.monotonic()
        answer = service.hook()
        assert time.monotonic() - started < DEADLINE_S + 1.0
        assert answer.status_code == 200, answer.text
        (card,) = answer.json()["cards"]
        assert "unavailable" in card["summary"].lower()  # degraded, honest, and still an answer
        metrics = service.get("/metrics").text
        assert 'hipcad_dependency_up{dependency="store"} 0.0' in metrics
    finally:
        postgres.start()
    wait_for(lambda: store_status(service) == "up", 15, "the store was never seen back")


def test_metrics_and_probes_answer_within_a_second_while_postgresql_is_frozen(
    service: Service, postgres: PostgresServer
):
    assert service.get("/metrics").status_code == 200  # the database figures are cached once
    with ThreadPoolExecutor(max_workers=8) as pool, frozen(postgres):
        hooks = [pool.submit(service.hook) for _ in range(8)]  # their database calls hang meanwhile
        time.sleep(1.0)
        for _ in range(3):
            for path in ("/metrics", "/healthz", "/readyz"):
                response, took = timed_get(service, path)
                assert response.status_code == 200, (path, response.text)
                assert took < PROBE_LIMIT_S, f"{path} took {took:.2f} s with PostgreSQL frozen"
            time.sleep(0.5)
        wait_for(lambda: store_status(service) == "down", 10, "a hung store was never reported down")
        metrics = service.get("/metrics").text
        assert 'hipcad_dependency_up{dependency="store"} 0.0' in metrics
        assert "hipcad_metrics_cache_age_seconds" in metrics
    for hook in hooks:
        assert hook.result(timeout=60).status_code == 200
    wait_for(lambda: store_status(service) == "up", 15, "the store was never seen back after SIGCONT")


def test_serve_waits_for_the_database_with_json_logs_and_comes_up_with_it(
    env: dict[str, str], postgres: PostgresServer, tmp_path: Path
):
    log = tmp_path / "serve.log"
    postgres.stop()
    try:
        waiting = start_service(env, log, ready=lambda _: unreachable_attempts(log) >= 3)
        assert waiting.process.process is not None and waiting.process.process.poll() is None  # not exited
        with pytest.raises(httpx.ConnectError):  # not listening before its store is there
            waiting.get("/startupz")
    finally:
        postgres.start()
    try:
        wait_for(
            lambda: _answers(waiting, "/startupz"), 30, f"serve never came up after the database:\n{log.read_text()}"
        )
        assert waiting.get("/readyz").status_code == 200
        lines = json_lines(log)
        assert not any("Traceback" in json.dumps(line) for line in lines)
        assert any(line["message"].startswith("database reachable after") for line in lines)
    finally:
        waiting.process.stop()


def _answers(service: Service, path: str) -> bool:
    try:
        return service.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_migrate_retries_an_unreachable_database_and_gives_up_only_when_told(tmp_path: Path):
    url = f"postgresql+psycopg://hipcad@127.0.0.1:{free_port()}/hipcad"  # nothing listens there
    env = {**os.environ, "HIPCAD_DATABASE_URL": url, "HIPCAD_DATABASE_RETRY_MAX_S": "0.5"}
    started = time.monotonic()
    done = subprocess.run(
        [CLI, "migrate", "--give-up-after", "2"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert time.monotonic() - started >= 2
    log = tmp_path / "migrate.log"
    log.write_text(done.stdout + done.stderr)
    lines = json_lines(log)
    assert sum("database unreachable" in line["message"] for line in lines) >= 3
    assert lines[-1]["level"] == "CRITICAL" and lines[-1]["message"] == "migrate failed"
    assert lines[-1]["exc_type"].endswith("OperationalError")
    assert "Traceback" not in log.read_text()


def test_metrics_on_their_own_port_leave_the_public_port(tmp_path: Path):
    """``HIPCAD_METRICS_PORT``: /metrics answers there, and the service port no longer serves it."""
    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from cds_service.settings import Settings

    port = free_port()
    settings = Settings(
        feedback_db=tmp_path / "store.sqlite3",
        dicom_folder=tmp_path,
        triton_url=f"127.0.0.1:{free_port()}",
        jwt_required=False,
        metrics_port=port,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/healthz").status_code == 200
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200 and "hipcad_dependency_up" in scraped.text
    with pytest.raises(httpx.ConnectError):  # stopped with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
