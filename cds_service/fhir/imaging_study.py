"""Find the patient's hip/pelvis radiograph: FHIR R4 ImagingStudy → its DICOMweb Endpoint.

ImagingStudy (http://hl7.org/fhir/R4/imagingstudy.html) names the study, series and instances by
DICOM UID and points through ``endpoint`` (study or series level) to an Endpoint
(http://hl7.org/fhir/R4/endpoint.html) whose ``connectionType`` ``dicom-wado-rs`` gives the
DICOMweb base ``address``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RADIOGRAPHY = frozenset({"CR", "DX"})
_HIP_WORDS = ("hip", "pelvis", "pelvic", "femur")
#: SNOMED CT body structures accepted as hip/pelvis (hip joint 24136001, pelvis 12921003,
#: pelvis and hips 362188000 — anything else falls back to the words above).
_HIP_SNOMED = frozenset({"24136001", "12921003", "362188000", "29836001", "287679003", "287579007"})


@dataclass(frozen=True)
class StudyRef:
    """The instance to analyse and where to fetch it from."""

    imaging_study_id: str | None
    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str | None
    endpoint_address: str
    started: str | None


def _uid(value: str | None) -> str | None:
    return value.removeprefix("urn:oid:") if value else None


def _modalities(study: dict[str, Any]) -> set[str]:
    codes = {m.get("code") for m in study.get("modality") or []}
    codes |= {(s.get("modality") or {}).get("code") for s in study.get("series") or []}
    return {code for code in codes if code}


def _is_hip(study: dict[str, Any]) -> bool:
    for series in study.get("series") or []:
        site = series.get("bodySite") or {}
        if site.get("code") in _HIP_SNOMED:
            return True
        if any(word in str(site.get("display", "")).lower() for word in _HIP_WORDS):
            return True
    text = " ".join(str(study.get(key) or "") for key in ("description",)).lower()
    return any(word in text for word in _HIP_WORDS)


def _started(study: dict[str, Any]) -> datetime:
    value = study.get("started")
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _resources(bundle: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not bundle or bundle.get("resourceType") != "Bundle":
        return []
    return [entry["resource"] for entry in bundle.get("entry") or [] if isinstance(entry.get("resource"), dict)]


def _endpoint_address(reference: dict[str, Any], study: dict[str, Any], bundle: list[dict[str, Any]]) -> str | None:
    ref = str(reference.get("reference") or "")
    candidates = list(study.get("contained") or []) + [r for r in bundle if r.get("resourceType") == "Endpoint"]
    for endpoint in candidates:
        if endpoint.get("resourceType") != "Endpoint":
            continue
        if ref in (f"#{endpoint.get('id')}", f"Endpoint/{endpoint.get('id')}") or ref.endswith(
            f"/Endpoint/{endpoint.get('id')}"
        ):
            if (endpoint.get("connectionType") or {}).get("code") == "dicom-wado-rs" and endpoint.get("address"):
                return str(endpoint["address"])
    return None


def select_study(bundle: dict[str, Any] | None) -> StudyRef | None:
    """Pick the newest CR/DX hip or pelvis study of a searchset Bundle that has a DICOMweb endpoint."""
    resources = _resources(bundle)
    studies = [
        r for r in resources if r.get("resourceType") == "ImagingStudy" and r.get("status") != "entered-in-error"
    ]
    studies = [s for s in studies if _modalities(s) & RADIOGRAPHY and _is_hip(s)]
    for study in sorted(studies, key=_started, reverse=True):
        study_uid = next(
            (_uid(i.get("value")) for i in study.get("identifier") or [] if i.get("system") == "urn:dicom:uid"),
            None,
        )
        if not study_uid:
            continue
        for series in study.get("series") or [{}]:
            references = list(series.get("endpoint") or []) + list(study.get("endpoint") or [])
            address = next((a for ref in references if (a := _endpoint_address(ref, study, resources))), None)
            if not address:
                continue
            instances = series.get("instance") or []
            return StudyRef(
                imaging_study_id=study.get("id"),
                study_instance_uid=study_uid,
                series_instance_uid=series.get("uid"),
                sop_instance_uid=instances[0].get("uid") if instances else None,
                endpoint_address=address,
                started=study.get("started"),
            )
    return None
