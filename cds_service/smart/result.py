"""Which stored result a SMART launch opens: the card's ``appContext``, else the patient's latest analysed study.

1. ``appContext`` (CDS Hooks 2.0 § Link: the EHR passes a ``smart`` link's ``appContext`` to the app;
   SMART App Launch 2.0 returns it in the token response): the viewer token the card carried
   (:func:`cds_service.viewer.smart_app_context`). It came from the authorization server, not from the
   browser, and its HMAC proves this service issued it.
2. Otherwise the launch's patient (token response ``patient``) is searched for ImagingStudies on the
   EHR's FHIR server with the launch's access token (scope ``patient/ImagingStudy.rs``, SMART v1
   ``.read`` accepted), newest first, and the first study whose result this process holds is shown:
   same Study Instance UID, the same patient (or analysed on arrival, for no patient), the same
   instance when the ImagingStudy names one. The pipeline is never run from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.domain import ARRIVAL, ResultKey
from cds_service.errors import PrefetchUnavailableError
from cds_service.fhir.client import FhirClient
from cds_service.fhir.imaging_study import subject_id
from cds_service.smart.discovery import LaunchRefused
from cds_service.store import AsyncStore
from cds_service.viewer.signing import InvalidToken, verify


@dataclass(frozen=True)
class FoundResult:
    """The result to show: its viewer link row id, and how it was found (``app-context`` or ``fhir``)."""

    result_id: str
    source: str


def grants_read(scope: str, resource: str) -> bool:
    """True when ``scope`` (space-separated) lets the app read ``resource`` in the patient's compartment.

    SMART App Launch 2.0 § Scopes: ``patient/ImagingStudy.rs`` (v2, ``r`` with or without ``s``) or the v1
    ``patient/ImagingStudy.read``; ``user/`` scopes and the ``*`` resource also grant it. An empty scope
    means the server granted what was asked for (RFC 6749 § 5.1).
    """
    if not scope.strip():
        return True
    for item in scope.split():
        context, _, rest = item.partition("/")
        name, _, permissions = rest.partition(".")
        permissions = permissions.split("?", 1)[0]
        if context not in ("patient", "user") or name not in (resource, "*"):
            continue
        if permissions in ("read", "*") or (permissions and "r" in permissions and set(permissions) <= set("cruds")):
            return True
    return False


def app_context_token(app_context: str | None) -> str | None:
    """The viewer token in a card's ``appContext`` (a JSON object with ``hipcadViewerToken``), or None."""
    if not app_context:
        return None
    try:
        value = json.loads(app_context)
    except ValueError:
        return None
    token = value.get("hipcadViewerToken") if isinstance(value, dict) else None
    return token if isinstance(token, str) and token else None


def _study_uid(study: dict[str, Any]) -> str | None:
    for identifier in study.get("identifier") or []:
        if identifier.get("system") == "urn:dicom:uid" and isinstance(identifier.get("value"), str):
            return identifier["value"].removeprefix("urn:oid:")
    return None


def _started(study: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(study.get("started"))).timestamp()
    except ValueError:
        return float("-inf")


def patient_studies(bundle: dict[str, Any], patient: str) -> list[tuple[str, set[str]]]:
    """(Study Instance UID, instance UIDs) of ``patient``'s ImagingStudies in ``bundle``, newest first."""
    studies = [
        (entry.get("resource") or {})
        for entry in bundle.get("entry") or []
        if isinstance(entry, dict) and (entry.get("resource") or {}).get("resourceType") == "ImagingStudy"
    ]
    studies = [s for s in studies if s.get("status") != "entered-in-error" and subject_id(s) == patient]
    studies.sort(key=_started, reverse=True)
    found = []
    for study in studies:
        uid = _study_uid(study)
        if uid:
            instances = {i["uid"] for s in study.get("series") or [] for i in s.get("instance") or [] if i.get("uid")}
            found.append((uid, instances))
    return found


def held_result(store: AsyncStore, patient: str, study_uid: str, instances: set[str]) -> ResultKey | None:
    """The newest key this process holds for ``study_uid`` of ``patient`` (or analysed on arrival)."""
    for key in reversed(store.local_keys()):
        if key.study_instance_uid != study_uid or key.patient_id not in (patient, ARRIVAL):
            continue
        if instances and key.sop_instance_uid not in instances:
            continue
        return key
    return None


async def find_result(
    store: AsyncStore,
    secret: bytes,
    link_ttl_s: float,
    iss: str,
    access_token: str,
    patient: str | None,
    scope: str,
    app_context: str | None,
    timeout_s: float = 5.0,
) -> FoundResult:
    """The result a launch opens (see the module docstring); raises :class:`LaunchRefused` with a clear reason."""
    token = app_context_token(app_context)
    if token is not None:
        try:
            return FoundResult(verify(token, secret), "app-context")
        except InvalidToken:
            pass  # expired or not ours: look the patient's studies up instead
    if not patient:
        raise LaunchRefused("The EHR did not say which patient this launch is for.", 400)
    if not grants_read(scope, "ImagingStudy"):
        raise LaunchRefused("The EHR did not grant this app access to the patient's imaging studies.", 403)
    try:
        bundle = await FhirClient(iss, access_token, timeout_s).get(
            "ImagingStudy", {"patient": f"Patient/{patient}", "_sort": "-started", "_count": "20"}
        )
    except PrefetchUnavailableError:
        raise LaunchRefused("The patient's imaging studies could not be read from the EHR.", 502) from None
    for study_uid, instances in patient_studies(bundle, patient):
        key = held_result(store, patient, study_uid, instances)
        if key is not None:
            return FoundResult(await store.viewer_link(key, link_ttl_s), "fhir")
    raise LaunchRefused("No AI hip fracture result is available for this patient's imaging studies.", 404)
