"""Fixtures for the sandbox suite: the real CDS Hooks sandbox, the real service on uvicorn with the real
Triton, and the FHIR test server holding one patient's chart (Patient, ImagingStudy, DICOMweb Endpoint
of the folder store with the sample AP pelvis phantom)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cds_service.demo import running_service
from cds_service.settings import Settings
from tests.conftest import require
from tests.sandbox.stack import (
    PATIENT,
    open_fhir_gateway,
    put_chart,
    sandbox_available,
    sandbox_settings,
    sandbox_site,
    sandbox_url,
)
from tests.servers.fhir import MedplumFhirServer
from tests.viewer.browser import CHROMIUM


@dataclass(frozen=True)
class SandboxStack:
    """The running pieces, as a user of the sandbox sees them."""

    site: str  # the sandbox page's origin
    service: str  # the CDS service's base URL
    fhir: str  # the open FHIR base the sandbox and the service use
    settings: Settings

    @property
    def discovery(self) -> str:
        return f"{self.service}/cds-services"

    def page(self, **extra: str) -> str:
        """The sandbox URL for the chart's patient (``hook``, ``screen``)."""
        return sandbox_url(self.site, self.discovery, self.fhir, PATIENT, **extra)


@pytest.fixture(scope="module")
def chart_server(dicom_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MedplumFhirServer]:
    """A FHIR test server of its own with the patient's chart; the study's Endpoint is the folder store."""
    require(MedplumFhirServer.installed(), "the FHIR test server is not installed (run .ci/install-servers.sh)")
    server = MedplumFhirServer(tmp_path_factory.mktemp("sandbox-fhir")).start()
    put_chart(server, dicom_store)
    yield server
    server.stop()


@pytest.fixture
def sandbox(service_settings_with_triton: Settings, chart_server: MedplumFhirServer) -> Iterator[SandboxStack]:
    """The sandbox site, the open FHIR gateway and the service configured as the README's recipe says."""
    require(sandbox_available(), "the CDS Hooks sandbox build (../shared/tools/cds-hooks-sandbox/build) is missing")
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (run .ci/install-browser.sh)")
    with sandbox_site() as site, open_fhir_gateway(chart_server.base_url, chart_server.token, site) as fhir:
        settings = sandbox_settings(service_settings_with_triton, site, fhir)
        with running_service(settings) as service:
            yield SandboxStack(site, service, fhir, settings)
