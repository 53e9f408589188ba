"""Two replicas, one PostgreSQL: links, JWT replays, feedback, results and analyses are shared.

Two real ``cds-service serve`` processes on different ports share one real PostgreSQL (a throwaway
cluster of Debian's ``postgresql``) and one real Triton, behind one public URL (the JWT audience and
the links' host), as two pods behind a Kubernetes Service. Triton's own statistics count analyses.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select

from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import TritonServer, free_port
from cds_service.store import schema
from cds_service.store.sql import SqlStore, engine_for
from tests.cdshooks.test_conformance import feedback_body
from tests.servers.base import ServerProcess
from tests.servers.postgres import PostgresServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]

PUBLIC = "http://hipcad.test"  # the Service's address: JWT audience and link host for both replicas
PATH = "/cds-services/hip-fracture-order-select"


@dataclass
class Replica:
    name: str
    url: str
    process: ServerProcess

    def post(self, path: str, body: dict, token: str) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=90)


@dataclass
class Cluster:
    replicas: tuple[Replica, Replica]
    folder: Path
    private_key: bytes
    triton: TritonServer

    def token(self, path: str = PATH) -> str:
        return sign_request_jwt(self.private_key, "hipcad-demo-ehr", PUBLIC + path)

    def new_study(self, seed: int) -> dict:
        """A hook request about a study no replica has analysed (one of the phantoms in the image store)."""
        ds = pydicom.dcmread(self.folder / f"sample-{seed}.dcm", stop_before_pixels=True)
        template = load_example("order-select.json")
        return with_studies(template, imaging_study_bundle(ds, template["context"]["patientId"], self.folder.as_uri()))

    def analyses(self) -> int:
        """Requests Triton's ensemble has executed (its statistics API): one per analysis."""
        url = f"http://127.0.0.1:{self.triton.http_port}/v2/models/hip_analysis/stats"
        stats = httpx.get(url, timeout=10).json()["model_stats"]
        return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


def replica_env(
    database_url: str, ehr_public_key: Path, folder: Path, triton_url: str, logs: Path, hook_deadline_s: float
) -> dict[str, str]:
    """The settings the replicas of a cluster share (each adds its own port): one public URL, database,
    viewer secret, image folder and Triton; their outboxes under ``logs`` (outbox/ beside an unused
    feedback file); jti checks soft, so hooks are answered through a database outage (the trade-off:
    jwt.py; these tests are about what is stored and shared, not about that trade-off)."""
    return {
        "HIPCAD_HOST": "127.0.0.1",
        "HIPCAD_PUBLIC_BASE_URL": PUBLIC,
        "HIPCAD_DATABASE_URL": database_url,
        "HIPCAD_VIEWER_SECRET": "replicas-share-this-key",
        "HIPCAD_JWT_PUBLIC_KEY_FILE": str(ehr_public_key),
        "HIPCAD_DICOM_FOLDER": str(folder),
        "HIPCAD_TRITON_URL": triton_url,
        "HIPCAD_HOOK_DEADLINE_S": str(hook_deadline_s),
        "HIPCAD_FEEDBACK_DB": str(logs / "unused.sqlite3"),
        "HIPCAD_JTI_STRICT": "false",
        "HIPCAD_CARD_LINK": "absolute",  # the tests open the signed viewer link on either replica
    }


def start_replica(name: str, env: dict[str, str], log: Path) -> Replica:
    port = free_port()
    process = ServerProcess(
        name,
        [str(Path(sys.executable).parent / "cds-service"), "serve"],
        log,
        env={**os.environ, **env, "HIPCAD_PORT": str(port)},
    )
    url = f"http://127.0.0.1:{port}"
    process.start(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200, timeout_s=90)
    return Replica(name, url, process)


@pytest.fixture(scope="module")
def cluster(postgres_server: PostgresServer, triton, ehr_keys, tmp_path_factory) -> Iterator[Cluster]:
    from cds_service.training.phantoms import write_sample_study

    folder = tmp_path_factory.mktemp("replica-store")
    for seed in range(301, 306):  # the image store holds them before the replicas start (it indexes once)
        write_sample_study(folder, seed=seed)
    logs = tmp_path_factory.mktemp("replica-logs")
    env = replica_env(postgres_server.url, ehr_keys[1], folder, triton.grpc_url, logs, hook_deadline_s=60)
    first = start_replica("replica-1", env, logs / "replica-1.log")
    try:
        second = start_replica("replica-2", env, logs / "replica-2.log")
    except Exception:
        first.process.stop()
        raise
    yield Cluster((first, second), folder, ehr_keys[0], triton)
    for replica in (first, second):
        replica.process.stop()


def finding_card(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert "analysis" not in card["summary"].lower(), card["summary"]  # a finding, not "in progress"/"unavailable"
    return card


def test_a_study_analysed_by_one_replica_is_a_cache_hit_on_the_other(cluster: Cluster):
    first, second = cluster.replicas
    request = cluster.new_study(seed=301)
    before = cluster.analyses()
    card_1 = finding_card(first.post(PATH, request, cluster.token()))
    assert cluster.analyses() == before + 1
    card_2 = finding_card(second.post(PATH, request, cluster.token()))
    assert cluster.analyses() == before + 1  # replica 2 analysed nothing: the result came from PostgreSQL
    assert card_2["summary"] == card_1["summary"]


def test_a_viewer_link_issued_by_one_replica_opens_on_the_other(cluster: Cluster):
    first, second = cluster.replicas
    card = finding_card(first.post(PATH, cluster.new_study(seed=302), cluster.token()))
    (link,) = [link for link in card["links"] if link["type"] == "absolute"]
    assert link["url"].startswith(PUBLIC + "/viewer/")
    path = link["url"].removeprefix(PUBLIC)
    page = httpx.get(second.url + path, timeout=30)
    assert page.status_code == 200 and "Right hip" in page.text
    heat = httpx.get(second.url + path + "/heat.png", timeout=30)
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"


def test_a_jti_used_on_one_replica_is_refused_on_the_other(cluster: Cluster):
    first, second = cluster.replicas
    request = cluster.new_study(seed=303)
    token = cluster.token()
    assert first.post(PATH, request, token).status_code == 200
    assert second.post(PATH, request, token).status_code == 401  # the same jti, replayed elsewhere
    assert second.post(PATH, request, cluster.token()).status_code == 200  # a fresh token is fine


def test_feedback_sent_to_one_replica_for_a_card_of_the_other_is_joined_and_counted(cluster: Cluster):
    first, second = cluster.replicas
    card = finding_card(first.post(PATH, cluster.new_study(seed=304), cluster.token()))
    name = f'hipcad_feedback_cards_accepted_total{{indicator="{card["indicator"]}"}}'
    before = accepted(first, name)  # the database may hold other tests' feedback
    path = PATH + "/feedback"
    body = feedback_body(card["uuid"], card["suggestions"][0]["uuid"])
    assert second.post(path, body, cluster.token(path)).status_code == 200
    assert second.post(path, body, cluster.token(path)).status_code == 200  # the EHR retried: counted once
    for replica in (first, second):  # the figures are the cluster's, the same on every replica
        assert accepted(replica, name) == before + 1, replica.name


def accepted(replica: Replica, name: str) -> float:
    text = httpx.get(replica.url + "/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def test_two_replicas_receiving_the_same_new_study_at_once_run_one_analysis(cluster: Cluster):
    request = cluster.new_study(seed=305)
    before = cluster.analyses()
    responses: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(2)

    def send(replica: Replica, token: str) -> None:
        barrier.wait()
        responses[replica.name] = replica.post(PATH, request, token)

    threads = [threading.Thread(target=send, args=(r, cluster.token())) for r in cluster.replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    summaries = {finding_card(response)["summary"] for response in responses.values()}
    assert len(responses) == 2 and len(summaries) == 1
    assert cluster.analyses() == before + 1  # one lease, one analysis; the other replica waited for it


def test_postgresql_restarted_requests_fail_soft_and_recover(cluster: Cluster, postgres_server: PostgresServer):
    """The database goes away: hooks still get a finding (analysed locally), feedback is accepted (kept
    in the replica's outbox); once it is back, the outbox is replayed and everything is shared again
    without a restart (the whole story under load: tests/test_faults.py)."""
    first, second = cluster.replicas
    postgres_server.stop()
    try:
        card = finding_card(first.post(PATH, cluster.new_study(seed=301), cluster.token()))
        assert httpx.get(first.url + "/healthz", timeout=10).status_code == 200  # alive: no restart loop
        path = PATH + "/feedback"
        body = feedback_body(card["uuid"], card["suggestions"][0]["uuid"])
        assert first.post(path, body, cluster.token(path)).status_code == 200
    finally:
        postgres_server.start()
    sql = SqlStore(engine_for(postgres_server.url))
    join = (
        select(schema.feedback.c.outcome)
        .select_from(schema.feedback.join(schema.card, schema.card.c.uuid == schema.feedback.c.card))
        .where(schema.card.c.uuid == card["uuid"])
    )
    deadline = time.monotonic() + 30
    while True:  # the outbox replays in the background: the card and its feedback reach the database, joined
        with sql.engine.connect() as db:
            if db.execute(join).scalars().all() == ["accepted"]:
                break
        assert time.monotonic() < deadline, "the outbox was not replayed"
        time.sleep(0.2)
    sql.close()
    request = cluster.new_study(seed=303)
    finding_card(first.post(PATH, request, cluster.token()))
    before = cluster.analyses()
    finding_card(second.post(PATH, request, cluster.token()))
    assert cluster.analyses() == before  # shared again: replica 2 finds replica 1's result
