"""Relevance: is this hook call about hip or pelvis imaging? Else answer ``{"cards": []}`` fast.

Hip/pelvis imaging orders are recognised by code (CPT radiology codes for the hip and pelvis) or,
failing that, by the words of the order's text/display. For ``order-select`` only the orders named
in ``context.selections`` are considered, as the hook definition asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"

#: Default code set (``HIPCAD_RELEVANT_ORDER_CODES`` replaces it; "system|code" strings):
#: CPT 72170/72190 pelvis radiographs; 73501–73503 hip, unilateral, with pelvis when performed;
#: 73521–73523 hips, bilateral, with pelvis when performed. LOINC (RSNA/LOINC radiology playbook)
#: 30766-0 XR Pelvis 3 Views; 30767-8 XR Pelvis and Hip Views; 30768-6 XR Pelvis and Hip - bilateral
#: Views; 36631-0 XR Pelvis and Hip - left; 36705-2 XR Pelvis and Hip AP and Lateral.
#: SNOMED CT procedure codes differ by edition and local practice: add them through the setting.
DEFAULT_CODES: tuple[str, ...] = tuple(
    [f"{CPT}|{code}" for code in ("72170", "72190", "73501", "73502", "73503", "73521", "73522", "73523")]
    + [f"{LOINC}|{code}" for code in ("30766-0", "30767-8", "30768-6", "36631-0", "36705-2")]
)
HIP_PELVIS_CODES: frozenset[tuple[str, str]] = frozenset(tuple(c.split("|", 1)) for c in DEFAULT_CODES)  # type: ignore[misc]
_WORDS = re.compile(r"\b(hip|hips|pelvis|pelvic|femoral neck|proximal femur)\b", re.IGNORECASE)
_IMAGING = re.compile(r"\b(x-?ray|xr|radiograph\w*|imaging|ct|mri|dx|cr)\b", re.IGNORECASE)


def _codings(resource: dict[str, Any]) -> Iterable[dict[str, Any]]:
    code = resource.get("code") or {}
    yield from code.get("coding") or []


def code_set(codes: Iterable[str]) -> frozenset[tuple[str, str]]:
    """Parse "system|code" strings into a set of (system, code) pairs."""
    pairs = set()
    for item in codes:
        system, _, code = item.rpartition("|")
        if not system or not code:
            raise ValueError(f"relevant order code {item!r} is not 'system|code'")
        pairs.add((system, code))
    return frozenset(pairs)


def is_hip_imaging_order(resource: dict[str, Any], codes: frozenset[tuple[str, str]] = HIP_PELVIS_CODES) -> bool:
    """True for a ServiceRequest that orders hip or pelvis imaging (by code, else by its words)."""
    if resource.get("resourceType") != "ServiceRequest":
        return False
    for coding in _codings(resource):
        if (coding.get("system"), coding.get("code")) in codes:
            return True
    texts = [str((resource.get("code") or {}).get("text") or "")]
    texts += [str(coding.get("display") or "") for coding in _codings(resource)]
    joined = " ".join(texts)
    return bool(_WORDS.search(joined) and _IMAGING.search(joined))


def relevant_orders(
    context: dict[str, Any], codes: frozenset[tuple[str, str]] = HIP_PELVIS_CODES
) -> list[dict[str, Any]]:
    """The draft hip/pelvis imaging orders of an order-select / order-sign context."""
    bundle = context.get("draftOrders") or {}
    resources = [entry.get("resource") or {} for entry in bundle.get("entry") or [] if isinstance(entry, dict)]
    selections = context.get("selections")
    if selections:
        wanted = set(selections)
        resources = [r for r in resources if f"{r.get('resourceType')}/{r.get('id')}" in wanted]
    return [resource for resource in resources if is_hip_imaging_order(resource, codes)]
