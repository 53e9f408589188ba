"""Session fixtures for the real test servers (imported into tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.fhir import MedplumFhirServer
from tests.servers.orthanc import OrthancServer
from tests.servers.postgres import PostgresServer, available


def _require(condition: bool, reason: str) -> None:
    from tests.conftest import require

    require(condition, reason)


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """Orthanc with DICOMweb, authentication on (install: .ci/install-servers.sh)."""
    _require(OrthancServer.installed(), "Orthanc is not installed (run .ci/install-servers.sh)")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MedplumFhirServer]:
    """Medplum's FHIR engine in memory behind a bearer-token check (install: .ci/install-servers.sh)."""
    _require(MedplumFhirServer.installed(), "the FHIR test server is not installed (run .ci/install-servers.sh)")
    server = MedplumFhirServer(tmp_path_factory.mktemp("fhir")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL 15 cluster on loopback (Debian's ``postgresql``; .ci/install-servers.sh)."""
    _require(available(), "PostgreSQL is not installed (run .ci/install-servers.sh)")
    server = PostgresServer()
    server.start()
    yield server
    server.stop()
    server.remove()
