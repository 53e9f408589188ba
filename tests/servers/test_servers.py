"""The real test servers behave as the service will use them."""

from __future__ import annotations

import asyncio

import httpx
import pydicom
import pytest

from cds_service.dicom.retrieve import DicomRetriever, DicomwebCredentials
from cds_service.errors import StudyUnavailableError
from cds_service.training.phantoms import write_sample_study


@pytest.fixture(scope="module")
def stored(orthanc_server, tmp_path_factory) -> pydicom.Dataset:
    path = write_sample_study(tmp_path_factory.mktemp("s"), seed=21, site="site-b")  # RLE, MONOCHROME1
    orthanc_server.upload(path.read_bytes())
    return pydicom.dcmread(path)


def test_orthanc_refuses_requests_without_credentials(orthanc_server):
    assert httpx.get(f"{orthanc_server.dicomweb_url}/studies", timeout=5).status_code == 401


def test_retrieval_through_dicomweb_with_basic_auth_keeps_the_stored_syntax(orthanc_server, stored):
    retriever = DicomRetriever(
        [orthanc_server.dicomweb_url],
        credentials={orthanc_server.dicomweb_url: DicomwebCredentials(*orthanc_server.auth)},
    )
    ds = asyncio.run(
        retriever.retrieve_instance(
            orthanc_server.dicomweb_url, stored.StudyInstanceUID, stored.SeriesInstanceUID, stored.SOPInstanceUID
        )
    )
    assert ds.SOPInstanceUID == stored.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == stored.file_meta.TransferSyntaxUID
    assert (ds.pixel_array == stored.pixel_array).all()


def test_retrieval_of_the_first_instance_when_only_the_study_is_known(orthanc_server, stored):
    retriever = DicomRetriever(
        [orthanc_server.dicomweb_url],
        credentials={orthanc_server.dicomweb_url: DicomwebCredentials(*orthanc_server.auth)},
    )
    ds = asyncio.run(retriever.retrieve_instance(orthanc_server.dicomweb_url, stored.StudyInstanceUID, None, None))
    assert ds.SOPInstanceUID == stored.SOPInstanceUID


def test_wrong_credentials_are_an_unavailable_study_not_a_crash(orthanc_server, stored):
    retriever = DicomRetriever(
        [orthanc_server.dicomweb_url],
        credentials={orthanc_server.dicomweb_url: DicomwebCredentials("hipcad", "wrong")},
    )
    with pytest.raises(StudyUnavailableError, match="HTTP 401"):
        asyncio.run(retriever.retrieve_instance(orthanc_server.dicomweb_url, stored.StudyInstanceUID, None, None))


def test_fhir_server_requires_the_token(fhir_server):
    assert httpx.get(f"{fhir_server.base_url}/Patient", timeout=5).status_code == 401
    assert httpx.get(f"{fhir_server.base_url}/metadata", timeout=5).status_code == 200


def test_fhir_server_searches_imaging_studies_as_the_service_does(fhir_server):
    fhir_server.put({"resourceType": "Patient", "id": "srv-1"})
    for day, study_id in ((1, "older"), (9, "newer")):
        fhir_server.put(
            {
                "resourceType": "ImagingStudy",
                "id": study_id,
                "status": "available",
                "subject": {"reference": "Patient/srv-1"},
                "started": f"2026-11-0{day}T10:00:00Z",
                "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}],
            }
        )
    bundle = fhir_server.get("ImagingStudy", patient="Patient/srv-1", _sort="-started")
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["newer", "older"]


def test_the_folder_store_answers_repeated_calls_from_new_event_loops(dicom_store):
    """DICOMfileClient's SQLite index is bound to one thread: every call must land on that thread."""
    ds = pydicom.dcmread(next(dicom_store.glob("*.dcm")), stop_before_pixels=True)
    retriever = DicomRetriever([dicom_store.as_uri()])
    for _ in range(4):
        got = asyncio.run(retriever.retrieve_instance(dicom_store.as_uri(), ds.StudyInstanceUID, None, None))
        assert got.SOPInstanceUID == ds.SOPInstanceUID
