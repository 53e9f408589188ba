"""Shared fixtures: the real local Triton, the EHR's signing keys, a DICOM folder store, the app.

Under ``CI=true`` a missing real component fails the run instead of skipping (see README).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cds_service.app import create_app
from cds_service.cdshooks.jwt import ensure_keypair
from cds_service.errors import InferenceError
from cds_service.inference.triton_server import TritonServer, latest_model_file
from cds_service.settings import Settings
from cds_service.telemetry import setup_tracing
from tests.servers.fixtures import fhir_server, orthanc_server, postgres_server  # noqa: F401 - session fixtures

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip when a real component is missing on a developer machine; fail in CI."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required component missing in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    setup_tracing(processors=[SimpleSpanProcessor(exporter)])
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    span_exporter.clear()
    yield span_exporter


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The real Triton server (nvidia-pytriton's binary) serving ``model_repository/``."""
    with started_triton(tmp_path_factory.mktemp("triton")) as server:
        yield server


@contextmanager
def started_triton(workdir: Path, **options: Any) -> Iterator[TritonServer]:
    """A real local Triton on free ports serving ``model_repository/`` (``options``: TritonServer's),
    stopped on exit; missing pieces skip (fail under CI) with the reason."""
    settings = Settings()
    require(latest_model_file(settings.model_repository, "fracture").exists(), "no fracture model exported")
    try:
        server = TritonServer.on_free_ports(settings, workdir, **options)
    except InferenceError as exc:
        require(False, str(exc))
        raise
    server.start(timeout_s=120)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ehr_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """The EHR's private key (PEM bytes) and the path of its public key."""
    folder = tmp_path_factory.mktemp("keys")
    ensure_keypair(folder / "private.pem", folder / "public.pem")
    return (folder / "private.pem").read_bytes(), folder / "public.pem"


@pytest.fixture(scope="session")
def dicom_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local DICOM folder store holding the demo's sample study (a synthetic phantom)."""
    phantoms = pytest.importorskip("cds_service.training.phantoms")
    folder = tmp_path_factory.mktemp("dicom")
    phantoms.write_sample_study(folder, seed=7)
    return folder


@pytest.fixture
def service_settings(ehr_keys: tuple[bytes, Path], dicom_store: Path, tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=8080,
        jwt_public_key_file=ehr_keys[1],
        dicom_folder=dicom_store,
        output_folder=tmp_path / "out",
        feedback_db=tmp_path / "feedback.sqlite3",
        hook_deadline_s=60.0,
    )


@pytest.fixture
def service_settings_with_triton(service_settings: Settings, triton: TritonServer) -> Settings:
    return service_settings.model_copy(update={"triton_url": triton.grpc_url})


@contextmanager
def app_clients(settings_for: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """Factory: the in-process app started with ``settings_for(*args, **kwargs)``; every app it
    started is shut down on exit."""
    clients: list[TestClient] = []

    def make(*args: Any, **kwargs: Any) -> TestClient:
        settings = settings_for(*args, **kwargs)
        client = TestClient(create_app(settings), base_url=settings.base_url())
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def make_service(service_settings_with_triton: Settings) -> Iterator[Callable[..., TestClient]]:
    """Factory: the app with some settings changed (``make_service(hook_deadline_s=0.001)``)."""
    with app_clients(lambda **changes: service_settings_with_triton.model_copy(update=changes)) as make:
        yield make


@pytest.fixture
def service(make_service: Callable[..., TestClient]) -> TestClient:
    """The CDS service app (in-process) wired to the real Triton."""
    return make_service()
