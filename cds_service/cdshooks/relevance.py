"""Relevance: is this hook call about hip, pelvis or femur imaging? Else answer ``{"cards": []}`` fast.

Hip/pelvis/femur imaging orders (radiograph, CT or MR) are recognised by code (CPT and LOINC, see
:data:`DEFAULT_CODES`) or, failing that, by the words of the order's text/display: a hip, pelvis or
femur word and an imaging word, and none of the words of an obstetric/fetal or angiographic order
("MRI fetal pelvis", "CT angiography pelvis", "runoff", "venogram" are not fracture imaging). An
explicitly configured code always wins over the words: the site chose that code. For
``order-select`` only the orders named in ``context.selections`` are considered, as the hook
definition asks. The hook context comes from the EHR: odd shapes (a non-dict entry, a non-list
``coding``, a non-string ``code``) never raise, they are simply not relevant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"

#: CPT radiology codes (AMA CPT, Radiology 70010–79999):
#: XR: 72170 pelvis 1–2 views, 72190 pelvis ≥ 3 views; 73501–73503 hip unilateral (with pelvis when
#: performed); 73521–73523 hips bilateral (with pelvis when performed); 73551–73552 femur.
#: CT: 72192–72194 pelvis (without / with / without and with contrast); 73700–73702 lower extremity.
#: MR: 72195–72197 pelvis (non-vascular); 73718–73720 lower extremity other than joint (thigh);
#: 73721–73723 lower extremity joint (hip).
#: Angiography codes (72191 CTA pelvis, 72198 MRA pelvis, 73706 CTA lower extremity, 73725 MRA lower
#: extremity) and obstetric MR (74712) are deliberately absent.
CPT_CODES: tuple[str, ...] = (
    *("72170", "72190", "73501", "73502", "73503", "73521", "73522", "73523", "73551", "73552"),
    *("72192", "72193", "72194", "73700", "73701", "73702"),
    *("72195", "72196", "72197", "73718", "73719", "73720", "73721", "73722", "73723"),
)
#: LOINC (RSNA/LOINC Radiology Playbook terms, as listed in the LOINC Imaging Document Codes value
#: set, VSAC OID 1.3.6.1.4.1.12009.10.2.5):
#: XR: 30766-0 Pelvis 3 Views; 30767-8 Pelvis and Hip Views; 30768-6 Pelvis and Hip - bilateral Views;
#: 36631-0 Pelvis and Hip - left; 36705-2 Pelvis and Hip AP and Lateral; 36302-8 Femur 3 Views.
#: CT: 24865-8 Pelvis; 24866-6 Pelvis W contrast IV; 30615-9 Pelvis WO contrast; 30616-7 Pelvis WO and
#: W contrast IV; 36014-9 Hip; 36016-4 Hip - bilateral; 36018-0 Hip - left; 36021-4 Hip - right;
#: 36200-4 Hip W contrast IV; 36359-8 Hip WO and W contrast IV; 36172-5 Thigh W contrast IV; 36338-2
#: Thigh WO and W contrast IV.
#: MR: 24867-4 Pelvis; 30673-8 Pelvis WO contrast; 36237-6 Pelvis W contrast IV; 30674-6 Pelvis WO and W
#: contrast IV; 30671-2 Pelvis and Hip WO contrast; 30672-0 Pelvis and Hip WO and W contrast IV;
#: 36013-1 Hip; 36017-2 Hip - bilateral; 36020-6 Hip - left; 36022-2 Hip - right; 30687-8 Hip WO
#: contrast; 36199-8 Hip W contrast IV; 30688-6 Hip WO and W contrast IV; 36173-3 Thigh W contrast IV.
LOINC_CODES: tuple[str, ...] = (
    *("30766-0", "30767-8", "30768-6", "36631-0", "36705-2", "36302-8"),
    *("24865-8", "24866-6", "30615-9", "30616-7", "36014-9", "36016-4", "36018-0", "36021-4"),
    *("36200-4", "36359-8", "36172-5", "36338-2"),
    *("24867-4", "30673-8", "36237-6", "30674-6", "30671-2", "30672-0", "36013-1", "36017-2"),
    *("36020-6", "36022-2", "30687-8", "36199-8", "30688-6", "36173-3"),
)
#: Default code set (``HIPCAD_RELEVANT_ORDER_CODES`` replaces it; "system|code" strings).
#: SNOMED CT procedure codes differ by edition and local practice: add them through the setting.
DEFAULT_CODES: tuple[str, ...] = tuple(
    [f"{CPT}|{code}" for code in CPT_CODES] + [f"{LOINC}|{code}" for code in LOINC_CODES]
)
HIP_PELVIS_CODES: frozenset[tuple[str, str]] = frozenset(tuple(c.split("|", 1)) for c in DEFAULT_CODES)  # type: ignore[misc]

_WORDS = re.compile(r"\b(hips?|pelvis|pelvic|femurs?|femora|femoral|proximal femur)\b", re.IGNORECASE)
_IMAGING = re.compile(
    r"\b(x-?rays?|xr|radiograph\w*|imaging|ct|mri|mr|dx|cr|magnetic resonance|computed tomography|cat scan)\b",
    re.IGNORECASE,
)
#: Orders that name the pelvis or the femur but are not fracture imaging.
_EXCLUDED = re.compile(
    r"\b(obstetric\w*|ob|fetal|fetus|foetal|foetus|pregnan\w*|gestation\w*|"
    r"\w*angio\w*|arteriogra\w*|cta|mra|mrv|run-?offs?|venogra\w*|phlebogra\w*)\b",
    re.IGNORECASE,
)


def _codings(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    if isinstance(codings, list):
        yield from (coding for coding in codings if isinstance(coding, dict))


def _words(resource: dict[str, Any]) -> str:
    code = resource.get("code")
    texts = [code.get("text")] if isinstance(code, dict) else []
    texts += [coding.get("display") for coding in _codings(resource)]
    return " ".join(text for text in texts if isinstance(text, str))


def code_set(codes: Iterable[str]) -> frozenset[tuple[str, str]]:
    """Parse "system|code" strings into a set of (system, code) pairs."""
    pairs = set()
    for item in codes:
        system, _, code = item.rpartition("|")
        if not system or not code:
            raise ValueError(f"relevant order code {item!r} is not 'system|code'")
        pairs.add((system, code))
    return frozenset(pairs)


def is_hip_imaging_order(resource: Any, codes: frozenset[tuple[str, str]] = HIP_PELVIS_CODES) -> bool:
    """True for a ServiceRequest that orders hip, pelvis or femur imaging (by code, else by its words)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
        return False
    for coding in _codings(resource):
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and (system, code) in codes:
            return True  # an explicitly configured code wins over the words
    words = _words(resource)
    return bool(_WORDS.search(words) and _IMAGING.search(words) and not _EXCLUDED.search(words))


def relevant_orders(
    context: dict[str, Any], codes: frozenset[tuple[str, str]] = HIP_PELVIS_CODES
) -> list[dict[str, Any]]:
    """The draft hip/pelvis/femur imaging orders of an order-select / order-sign context ([] for junk)."""
    if not isinstance(context, dict):
        return []
    bundle = context.get("draftOrders")
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    if not isinstance(entries, list):
        return []
    resources = [entry.get("resource") for entry in entries if isinstance(entry, dict)]
    resources = [resource for resource in resources if isinstance(resource, dict)]
    selections = context.get("selections")
    if selections:
        wanted = {item for item in selections if isinstance(item, str)} if isinstance(selections, list) else set()
        resources = [r for r in resources if f"{r.get('resourceType')}/{r.get('id')}" in wanted]
    return [resource for resource in resources if is_hip_imaging_order(resource, codes)]
