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

#: CPT 72170/72190 pelvis radiographs; 73501–73503 hip (unilateral, with pelvis when performed);
#: 73521–73523 hips (bilateral, with pelvis when performed).
HIP_PELVIS_CODES: frozenset[tuple[str, str]] = frozenset(
    (CPT, code) for code in ("72170", "72190", "73501", "73502", "73503", "73521", "73522", "73523")
)
_WORDS = re.compile(r"\b(hip|hips|pelvis|pelvic|femoral neck|proximal femur)\b", re.IGNORECASE)
_IMAGING = re.compile(r"\b(x-?ray|xr|radiograph\w*|imaging|ct|mri|dx|cr)\b", re.IGNORECASE)


def _codings(resource: dict[str, Any]) -> Iterable[dict[str, Any]]:
    code = resource.get("code") or {}
    yield from code.get("coding") or []


def is_hip_imaging_order(resource: dict[str, Any]) -> bool:
    """True for a ServiceRequest that orders hip or pelvis imaging."""
    if resource.get("resourceType") != "ServiceRequest":
        return False
    for coding in _codings(resource):
        if (coding.get("system"), coding.get("code")) in HIP_PELVIS_CODES:
            return True
    texts = [str((resource.get("code") or {}).get("text") or "")]
    texts += [str(coding.get("display") or "") for coding in _codings(resource)]
    joined = " ".join(texts)
    return bool(_WORDS.search(joined) and _IMAGING.search(joined))


def relevant_orders(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The draft hip/pelvis imaging orders of an order-select / order-sign context."""
    bundle = context.get("draftOrders") or {}
    resources = [entry.get("resource") or {} for entry in bundle.get("entry") or [] if isinstance(entry, dict)]
    selections = context.get("selections")
    if selections:
        wanted = set(selections)
        resources = [r for r in resources if f"{r.get('resourceType')}/{r.get('id')}" in wanted]
    return [resource for resource in resources if is_hip_imaging_order(resource)]
