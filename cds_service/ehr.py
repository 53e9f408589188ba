"""An EHR stand-in: builds, signs and sends CDS Hooks requests as a CDS Client would.

Used by ``cds-service send-hook`` and ``cds-service demo``, and by the tests. It is a client of the
service, not part of it.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pydicom

from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.fhir.effective import dicom_instant

EXAMPLES = Path(__file__).resolve().parent / "hooks" / "examples"  # package data (see cdshooks/discovery.py)


def _fhir_datetime(ds: pydicom.Dataset, local_zone: str = "UTC") -> str | None:
    """Study Date/Time as a FHIR instant: in the header's Timezone Offset From UTC when it has one, else
    in ``local_zone`` (a DICOM time is local time; labelling it UTC would move it by the zone's offset)."""
    instant = dicom_instant(
        str(getattr(ds, "StudyDate", "") or ""),
        str(getattr(ds, "StudyTime", "") or ""),
        str(getattr(ds, "TimezoneOffsetFromUTC", "") or ""),
        local_zone,
    )
    return instant.isoformat() if instant else None


def imaging_study_bundle(ds: pydicom.Dataset, patient_id: str, dicomweb_address: str) -> dict[str, Any]:
    """A searchset Bundle with the ImagingStudy of ``ds`` and its DICOMweb Endpoint, as an EHR holds them."""
    endpoint_id = "dicomweb-1"
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": f"study-{str(ds.StudyInstanceUID)[-12:].replace('.', '-')}",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{ds.StudyInstanceUID}"}],
        "status": "available",
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": str(ds.Modality)}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "endpoint": [{"reference": f"Endpoint/{endpoint_id}"}],
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "description": str(getattr(ds, "StudyDescription", "") or "AP pelvis"),
        "series": [
            {
                "uid": str(ds.SeriesInstanceUID),
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": str(ds.Modality)},
                "bodySite": {"system": "http://snomed.info/sct", "code": "12921003", "display": "Pelvis"},
                "instance": [
                    {
                        "uid": str(ds.SOPInstanceUID),
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{ds.SOPClassUID}"},
                    }
                ],
            }
        ],
    }
    if started := _fhir_datetime(ds):
        study["started"] = started
    endpoint = {
        "resourceType": "Endpoint",
        "id": endpoint_id,
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": dicomweb_address,
    }
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [
            {"resource": study, "search": {"mode": "match"}},
            {"resource": endpoint, "search": {"mode": "include"}},
        ],
    }


def load_example(name: str) -> dict[str, Any]:
    """A hook request template from ``hooks/examples/``."""
    return json.loads((EXAMPLES / name).read_text())


def with_studies(request: dict[str, Any], studies: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``request`` with a fresh hookInstance and ``prefetch.studies`` set."""
    request = copy.deepcopy(request)
    request["hookInstance"] = str(uuid.uuid4())
    request.setdefault("prefetch", {})["studies"] = studies
    return request


def send_hook(
    service_url: str,
    request: dict[str, Any],
    private_key_pem: bytes | None,
    issuer: str,
    timeout_s: float = 60.0,
) -> httpx.Response:
    """POST a hook request with a freshly signed JWT whose ``aud`` is the exact service URL."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if private_key_pem is not None:
        headers["Authorization"] = f"Bearer {sign_request_jwt(private_key_pem, issuer, service_url)}"
    return httpx.post(service_url, json=request, headers=headers, timeout=timeout_s)
