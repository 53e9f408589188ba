"""Coded-value validation for what we emit: ``fhir.resources`` checks structure, not value sets.

Checks the required bindings of FHIR R4 on the elements we fill (status codes, Device name type,
Narrative status, Provenance entity role, Attachment content types), that every Coding names a code
system we know, that contained references resolve and that contained resources carry no security
label (R4 dom-5). A failure is a bug in our builders: :class:`InvalidResourceError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cds_service.errors import CdsServiceError
from cds_service.fhir import codes


class InvalidResourceError(CdsServiceError):
    """A resource we built breaks a FHIR binding."""


#: Required bindings (http://hl7.org/fhir/R4/...): the allowed codes of the elements we set.
REQUIRED = {
    ("DiagnosticReport", "status"): {
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    ("Observation", "status"): {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    ("Media", "status"): {
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    },
    ("ImagingStudy", "status"): {"registered", "available", "cancelled", "entered-in-error", "unknown"},
    ("Endpoint", "status"): {"active", "suspended", "error", "off", "entered-in-error", "test"},
}
DEVICE_NAME_TYPES = {
    "udi-label-name",
    "user-friendly-name",
    "patient-reported-name",
    "manufacturer-name",
    "model-name",
    "other",
}
NARRATIVE_STATUS = {"generated", "extensions", "additional", "empty"}
PROVENANCE_ENTITY_ROLES = {"derivation", "revision", "quotation", "source", "removal"}
KNOWN_SYSTEMS = {
    codes.LOINC,
    codes.SNOMED,
    codes.V2_0074,
    codes.OBSERVATION_CATEGORY,
    codes.V3_OBSERVATION_VALUE,
    codes.LOCAL_SYSTEM,
    codes.DCM,
    codes.MEDIA_TYPE,
    codes.ENDPOINT_CONNECTION_TYPE,
    codes.URI,
    codes.AI_DEVICE_TYPE_SYSTEM,
    codes.PROVENANCE_PARTICIPANT_TYPE,
    codes.V3_DATA_OPERATION,
    "http://unitsofmeasure.org",
}
IMAGE_TYPES = {"image/png", "image/jpeg"}
#: What a ``presentedForm`` may be: a rendering for people (R4 DiagnosticReport.presentedForm).
DOCUMENT_TYPES = {"text/html", "application/pdf", "text/plain"}


def _codings(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        if "system" in value and "code" in value and isinstance(value.get("code"), str):
            yield path, value
        for key, item in value.items():
            yield from _codings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _codings(item, f"{path}[{i}]")


def problems(resource: dict[str, Any]) -> list[str]:
    """Every binding problem in ``resource`` and its contained resources."""
    found = []
    resources = [resource, *resource.get("contained", [])]
    ids = {f"#{r.get('id')}" for r in resource.get("contained", [])}
    for item in resources:
        kind = item.get("resourceType")
        allowed = REQUIRED.get((kind, "status"))
        if allowed is not None and item.get("status") not in allowed:
            found.append(f"{kind}.status {item.get('status')!r} is not in its required value set")
        for name in item.get("deviceName", []):
            if name.get("type") not in DEVICE_NAME_TYPES:
                found.append(f"Device.deviceName.type {name.get('type')!r} is not a DeviceNameType")
        for attachment in [item["content"]] if "content" in item else []:
            if attachment.get("contentType") not in IMAGE_TYPES:
                found.append(f"{kind} attachment contentType {attachment.get('contentType')!r} is not an image type")
        for attachment in item.get("presentedForm", []):
            if attachment.get("contentType") not in DOCUMENT_TYPES:
                found.append(f"{kind}.presentedForm contentType {attachment.get('contentType')!r} is not a document")
        if "text" in item and item["text"].get("status") not in NARRATIVE_STATUS:
            found.append(f"{kind}.text.status {item['text'].get('status')!r} is not a NarrativeStatus")
        for entity in item.get("entity", []) if kind == "Provenance" else []:
            if entity.get("role") not in PROVENANCE_ENTITY_ROLES:
                found.append(f"Provenance.entity.role {entity.get('role')!r} is not a ProvenanceEntityRole")
    for item in resource.get("contained", []):
        if (item.get("meta") or {}).get("security"):
            found.append(f"contained {item.get('resourceType')} has a security label (dom-5)")
    for path, coding in _codings(resource, resource.get("resourceType", "")):
        if coding["system"] not in KNOWN_SYSTEMS:
            found.append(f"{path}: unknown code system {coding['system']!r}")
    for path, value in _references(resource, resource.get("resourceType", "")):
        if value.startswith("#") and value not in ids:
            found.append(f"{path}: contained reference {value} does not resolve")
    return found


def _references(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield path, value["reference"]
        for key, item in value.items():
            yield from _references(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _references(item, f"{path}[{i}]")


def check_bindings(resource: dict[str, Any]) -> None:
    """Raise InvalidResourceError listing every problem, if any."""
    if found := problems(resource):
        raise InvalidResourceError("; ".join(found))
