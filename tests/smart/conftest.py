"""Fixtures for the SMART launch: the real launcher before the real FHIR server, the service's viewer and
SMART routes on uvicorn, and a stored result for one patient."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI

from cds_service.demo import free_port, running_server
from cds_service.domain import Analysis, ResultKey
from cds_service.settings import Settings
from cds_service.smart import build_router as build_smart_router
from cds_service.smart.session import SessionStore
from cds_service.store import AsyncStore
from cds_service.viewer import build_router
from tests.conftest import require
from tests.servers.fhir import MedplumFhirServer
from tests.smart.launcher import SmartLauncher, available, bearer_forwarder
from tests.viewer.conftest import analysis, make_store, phantom_display  # noqa: F401 - session fixtures

WITH_RESULT = "hipcad-smart-with-result"
WITHOUT_RESULT = "hipcad-smart-without-result"
STUDY_UID = "1.2.826.0.1.3680043.10.1234.1"
OLD_STUDY_UID = "1.2.826.0.1.3680043.10.1234.2"
INSTANCE_UID = "1.2.826.0.1.3680043.10.1234.1.1.1"


def imaging_study(study_id: str, patient: str, study_uid: str, started: str, instance: str | None) -> dict:
    """An AP pelvis radiograph's ImagingStudy (FHIR R4) for ``patient``."""
    series = {
        "uid": study_uid + ".1",
        "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"},
    }
    if instance:
        series["instance"] = [
            {
                "uid": instance,
                "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.1.1"},
            }
        ]
    return {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "status": "available",
        "subject": {"reference": f"Patient/{patient}"},
        "started": started,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "description": "XR pelvis AP",
        "series": [series],
    }


@dataclass
class SmartStack:
    """The running pieces: the launcher, the service (viewer + SMART routes), its store and sessions."""

    launcher: SmartLauncher
    service_url: str
    settings: Settings
    store: AsyncStore
    sessions: SessionStore


@pytest.fixture(scope="module")
def fhir_with_studies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MedplumFhirServer]:
    """The FHIR test server with two patients: one whose latest study has a result, one with none."""
    require(MedplumFhirServer.installed(), "the FHIR test server is not installed (run .ci/install-servers.sh)")
    server = MedplumFhirServer(tmp_path_factory.mktemp("smart-fhir")).start()
    for patient in (WITH_RESULT, WITHOUT_RESULT):
        server.put({"resourceType": "Patient", "id": patient, "gender": "female"})
        server.put(  # the launcher's EHR launch puts the patient's latest encounter in context
            {
                "resourceType": "Encounter",
                "id": f"{patient}-ed",
                "status": "in-progress",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
                "subject": {"reference": f"Patient/{patient}"},
                "period": {"start": "2026-03-01T09:00:00Z"},
            }
        )
    server.put(imaging_study("smart-new", WITH_RESULT, STUDY_UID, "2026-03-01T10:00:00Z", INSTANCE_UID))
    server.put(imaging_study("smart-old", WITH_RESULT, OLD_STUDY_UID, "2025-01-01T10:00:00Z", None))
    server.put(imaging_study("smart-none", WITHOUT_RESULT, "1.2.826.0.1.3680043.10.1234.9", "2026-03-02", None))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def launcher(fhir_with_studies: MedplumFhirServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmartLauncher]:
    """The SMART App Launcher (npm, from ../shared/tools) in front of the FHIR test server."""
    require(available(), "the SMART launcher (../shared/tools/smart-launcher) or node/npm is missing")
    with bearer_forwarder(fhir_with_studies.base_url, fhir_with_studies.token) as fhir_base:
        started = SmartLauncher(tmp_path_factory.mktemp("smart-launcher"), fhir_base).start()
        yield started
        started.stop()


def smart_settings(folder: Path, launcher: SmartLauncher, **changes: object) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=free_port(),
        viewer_secret="smart-test-viewer-secret",
        viewer_link_ttl_s=900,
        result_ttl_s=3600,
        fhir_allowed_bases=[f"{launcher.base_url}/v/r4"],
        feedback_db=folder / "store.sqlite3",
        **changes,
    )


def put_result(store: AsyncStore, analysis: Analysis, patient: str, study_uid: str, instance: str) -> ResultKey:  # noqa: F811
    """Store ``analysis`` as the scheduler does after analysing ``instance`` of ``study_uid`` for ``patient``."""
    key = ResultKey("http://127.0.0.1:8042/dicom-web", study_uid, instance, patient, "hipcad-demo-ehr", "f@1,g@1")
    with ThreadPoolExecutor(1) as pool:  # playwright's event loop may run in this thread
        pool.submit(asyncio.run, store.put(key, analysis)).result()
    return key


@pytest.fixture
def make_stack(
    launcher: SmartLauncher,
    analysis: Analysis,  # noqa: F811 - the viewer's session fixture
    tmp_path: Path,
) -> Iterator[Callable[..., SmartStack]]:
    """Start the service's viewer and SMART routes (uvicorn) with ``Settings`` changes; one stored result."""
    servers = []

    def make(**changes: object) -> SmartStack:
        settings = smart_settings(tmp_path, launcher, **changes)
        store = make_store(tmp_path)
        put_result(store, analysis, WITH_RESULT, STUDY_UID, INSTANCE_UID)
        sessions = SessionStore(settings.smart_session_ttl_s)
        app = FastAPI()
        app.include_router(build_router(settings, store))
        app.include_router(build_smart_router(settings, store, sessions))
        server = running_server(app, settings)
        servers.append(server)
        return SmartStack(launcher, server.__enter__(), settings, store, sessions)

    yield make
    for server in servers:
        server.__exit__(None, None, None)
