"""Find the patient's hip/pelvis radiograph: FHIR R4 ImagingStudy → its DICOMweb Endpoint.

ImagingStudy (http://hl7.org/fhir/R4/imagingstudy.html) names the study, series and instances by
DICOM UID and points through ``endpoint`` (study or series level) to an Endpoint
(http://hl7.org/fhir/R4/endpoint.html) whose ``connectionType`` ``dicom-wado-rs`` gives the
DICOMweb base ``address``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    subject: str | None = None  # the Patient id the ImagingStudy's ``subject`` names
    based_on: tuple[str, ...] = ()  # ImagingStudy.basedOn references: the orders that produced the images


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


def _series_rank(series: dict[str, Any]) -> int:
    """Lower is better: an AP pelvis series first, then any pelvis/hip series, then the rest."""
    site = series.get("bodySite") or {}
    text = " ".join(
        [str(series.get("description") or ""), str(site.get("display") or "")]
        + [str(i.get("title") or "") for i in series.get("instance") or []]
    ).lower()
    is_pelvis = site.get("code") in {"12921003", "362188000"} or "pelvis" in text
    is_ap = bool(re.search(r"\bap\b|antero-?posterior", text))
    return 0 if (is_pelvis and is_ap) else 1 if is_pelvis else 2 if _is_hip({"series": [series]}) else 3


def _instance(series: dict[str, Any]) -> dict[str, Any] | None:
    """The AP instance of a series when titles say so, else the first."""
    instances = series.get("instance") or []
    titled = [i for i in instances if re.search(r"\bap\b", str(i.get("title") or "").lower())]
    return (titled or instances or [None])[0]


def subject_id(study: dict[str, Any]) -> str | None:
    """The id in ``ImagingStudy.subject`` when it is a Patient reference (``Patient/1``, ``…/Patient/1``)."""
    reference = (study.get("subject") or {}).get("reference")
    if not isinstance(reference, str):
        return None
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] else None


def _based_on(study: dict[str, Any], order_ids: set[str]) -> bool:
    return any(str(ref.get("reference", "")).split("/")[-1] in order_ids for ref in study.get("basedOn") or [])


def select_study(
    bundle: dict[str, Any] | None,
    lookback: timedelta | None = None,
    order_ids: set[str] | None = None,
    now: datetime | None = None,
    patient_id: str | None = None,
) -> StudyRef | None:
    """Pick the study to analyse from a searchset Bundle of ImagingStudies (with their Endpoints).

    Candidates: CR/DX, hip or pelvis (series body site, or description), not entered-in-error, with a
    ``dicom-wado-rs`` Endpoint, started within ``lookback`` when it is given. Preference: a study
    ``basedOn`` one of ``order_ids``, then the newest; within it the AP pelvis series and instance.
    With ``patient_id`` (the hook's ``context.patientId``), a study whose ``subject`` names another
    patient, or no patient, is never a candidate: an image must not cross patients.
    """
    resources = _resources(bundle)
    studies = [
        r for r in resources if r.get("resourceType") == "ImagingStudy" and r.get("status") != "entered-in-error"
    ]
    studies = [s for s in studies if _modalities(s) & RADIOGRAPHY and _is_hip(s)]
    if patient_id is not None:
        studies = [s for s in studies if subject_id(s) == patient_id]
    if lookback is not None:
        cutoff = (now or datetime.now(UTC)) - lookback
        studies = [s for s in studies if "started" not in s or _started(s) >= cutoff]
    order_ids = order_ids or set()
    studies.sort(key=lambda s: (_based_on(s, order_ids), _started(s)), reverse=True)
    for study in studies:
        study_uid = next(
            (_uid(i.get("value")) for i in study.get("identifier") or [] if i.get("system") == "urn:dicom:uid"),
            None,
        )
        if not study_uid:
            continue
        for series in sorted(study.get("series") or [{}], key=_series_rank):
            references = list(series.get("endpoint") or []) + list(study.get("endpoint") or [])
            address = next((a for ref in references if (a := _endpoint_address(ref, study, resources))), None)
            if not address:
                continue
            instance = _instance(series)
            return StudyRef(
                imaging_study_id=study.get("id"),
                study_instance_uid=study_uid,
                series_instance_uid=series.get("uid"),
                sop_instance_uid=instance.get("uid") if instance else None,
                endpoint_address=address,
                started=study.get("started"),
                subject=subject_id(study),
                based_on=tuple(
                    ref["reference"] for ref in study.get("basedOn") or [] if isinstance(ref.get("reference"), str)
                ),
            )
    return None
