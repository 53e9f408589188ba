"""Hypothesis strategies for fuzzing the running service, shared by tests/test_fuzz.py and bench/fuzz.py.

A case starts from a real request (``hooks/examples/*.json``, with or without the ImagingStudy Bundle
prefetched, or a feedback body as the CDS Hooks sandbox sends it) and mutates it: any field replaced
by a value of a wrong type, ``null``, a huge or deeply nested value, unicode, a time-zone-less date or
a huge number; fields deleted; extra fields added; and, at the byte level, raw tokens JSON forbids or
bounds (``NaN``, 10,000-digit numbers, lone surrogates), truncation and invalid UTF-8. Most cases are
signed with a valid JWT; a few carry a broken one. Every answer must be one of :data:`ALLOWED`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from hypothesis import strategies as st

from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.ehr import load_example, with_studies

ISSUER = "hipcad-demo-ehr"
ALLOWED = frozenset({200, 400, 401, 412, 413})
SERVICES = {
    "order-select": "hip-fracture-order-select",
    "order-sign": "hip-fracture-order-sign",
    "patient-view": "hip-fracture-patient-view",
}
EXAMPLES = ("order-select.json", "order-sign.json", "patient-view.json", "order-select-irrelevant.json")
#: Largest string a case may carry: above the fuzz server's ``max_request_bytes`` so 413 is reached.
HUGE = 300_000

WEIRD_STRINGS = [
    "",
    " ",
    "\x00",
    "2024-01-01T10:00:00",  # a time-zone-less dateTime
    "2024-01-01",
    "2024",
    "not a date",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+14:00",
    "Patient/../../etc",
    "ServiceRequest/xr-hip-1",
    "Endpoint/dicomweb-1",
    "#dicomweb-1",
    "dicom-wado-rs",
    "urn:dicom:uid",
    "urn:oid:",
    "http://[::1",
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data",
    "é" * 10,
    "\U0001f600\u200b\u202e",
    "\ufeff",
    "a" * 5000,
    "%00%2e%2e",
    "<script>alert(1)</script>",
    "'; DROP TABLE card;--",
    "entered-in-error",
    "Bundle",
    "ImagingStudy",
    "OperationOutcome",
    datetime.now().strftime("%Y-%m-%dT%H:%M:%S"),  # recent (within the lookback), time-zone-less
    datetime.now().strftime("%Y-%m-%d"),
    datetime.now().strftime("%Y-%m-%dT%H:%M:%S.%f+14:00"),
]
WEIRD_NUMBERS = [0, -1, 1.5, -0.0, 2**63, -(2**63) - 1, 10**60, 1e308, -1e-308, 5e-324]
#: Sentinels replaced in the serialised body by raw tokens json.dumps would never write.
RAW_TOKENS = {
    "__RAW_NAN__": "NaN",
    "__RAW_INF__": "-Infinity",
    "__RAW_LONG_INT__": "1" * 10_000,
    "__RAW_LONG_FLOAT__": "0." + "3" * 200,
    "__RAW_BIG_EXP__": "1e99999",
    "__RAW_SURROGATE__": '"\\ud800"',
    "__RAW_LOW_SURROGATE__": '"x\\udc00y"',
}


@dataclass(frozen=True)
class Case:
    """One request to send: path below the base URL, body bytes, and whether the JWT is valid."""

    path: str
    body: bytes
    auth: str = "valid"  # valid | missing | garbage | wrong-audience
    chunked: bool = False

    def __repr__(self) -> str:  # readable Hypothesis falsifying examples
        return f"Case(path={self.path!r}, auth={self.auth!r}, chunked={self.chunked}, body={self.body[:2000]!r})"


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Arbitrary JSON values of every type (small)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
        | st.sampled_from(WEIRD_STRINGS)
        | st.sampled_from(WEIRD_NUMBERS)
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
        max_leaves=max_leaves,
    )


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """A value nested 1 to 130 levels deep (lists and objects)."""
    depth = draw(st.integers(1, 130))
    value: Any = draw(st.sampled_from([0, "x", None, [], {}]))
    for _ in range(depth):
        value = [value] if draw(st.booleans()) else {"a": value}
    return value


def odd_values() -> st.SearchStrategy[Any]:
    """What a mutated field becomes."""
    return st.one_of(
        json_values(),
        st.sampled_from([None, True, False, 0, 5, "", [], {}, [None], [3], {"x": 1}]),
        st.sampled_from(WEIRD_STRINGS),
        st.sampled_from(WEIRD_NUMBERS),
        st.sampled_from(list(RAW_TOKENS)),
        nested(),
        st.integers(10, 120).map(lambda n: int("9" * n)),  # long number literals, around the bound
        st.integers(1, HUGE).map(lambda n: "x" * n),
    )


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and list indices) in a JSON document, the root excluded."""
    found = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return found
    for key, child in items:
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def _parent(document: Any, path: tuple) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with 1 to 4 mutations (replace, delete, add an extra field, wrap in a list)."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 4))):
        candidates = paths(document)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = _parent(document, path)
        operation = draw(st.sampled_from(["replace", "replace", "replace", "delete", "extra", "wrap"]))
        if operation == "replace":
            parent[path[-1]] = draw(odd_values())
        elif operation == "delete":
            del parent[path[-1]]
        elif operation == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.text(max_size=12))] = draw(odd_values())
    return document


def serialise(document: Any) -> bytes:
    """JSON with the raw-token sentinels substituted (so NaN, 10,000-digit numbers… reach the wire)."""
    text = json.dumps(document, ensure_ascii=False)
    for sentinel, token in RAW_TOKENS.items():
        text = text.replace(f'"{sentinel}"', token)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def byte_level(draw: st.DrawFn, body: bytes) -> bytes:
    """Occasionally damage the bytes themselves."""
    kind = draw(st.sampled_from(["none"] * 12 + ["truncate", "garbage", "bom", "latin1", "empty", "nest"]))
    if kind == "truncate" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if kind == "garbage":
        at = draw(st.integers(0, len(body)))
        return body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + body
    if kind == "latin1":
        return body.replace(b"hip", b"h\xefp")
    if kind == "empty":
        return b""
    if kind == "nest":
        depth = draw(st.integers(60, 3000))
        return b'{"hook": ' + b"[" * depth + b"]" * depth + b"}"
    return body


def hook_templates(studies: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """(hook, request) starting points: every example, with and without the studies prefetched."""
    templates = []
    for name in EXAMPLES:
        request = load_example(name)
        templates.append((request["hook"], request))
        if studies is not None:
            templates.append((request["hook"], with_studies(request, studies)))
    return templates


def feedback_templates() -> list[dict[str, Any]]:
    """Feedback bodies: the sandbox's override (reason without display) and an accepted suggestion."""
    override = {
        "feedback": [
            {
                "card": "9a0d4a51-0a7c-4e34-8c4b-0a0e7b2b1f00",
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {"system": "http://snomed.info/sct", "code": "428119001"},
                    "userComment": "Radiology read it",
                },
                "outcomeTimestamp": "2026-11-22T10:05:00.000Z",
            }
        ]
    }
    accepted = {
        "feedback": [
            {
                "card": "9a0d4a51-0a7c-4e34-8c4b-0a0e7b2b1f01",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "4b1d2c3e-0000-4000-8000-000000000001"}],
                "outcomeTimestamp": "2026-11-22T10:05:00Z",
            }
        ]
    }
    return [override, accepted]


@st.composite
def cases(draw: st.DrawFn, studies: dict[str, Any] | None = None) -> Case:
    """One fuzz case: a mutated hook request (mostly) or feedback body, signed or not."""
    if draw(st.integers(0, 9)) == 0:
        document = draw(st.sampled_from(feedback_templates()))
        hook = draw(st.sampled_from(sorted(SERVICES)))
        path = f"/cds-services/{SERVICES[hook]}/feedback"
    else:
        hook, document = draw(st.sampled_from(hook_templates(studies)))
        if draw(st.integers(0, 19)) == 0:  # sent to another hook's service
            hook = draw(st.sampled_from(sorted(SERVICES)))
        path = f"/cds-services/{SERVICES[hook]}"
    if draw(st.integers(0, 9)) > 0:  # a few unmutated ones: the valid path must stay valid
        document = draw(mutated(document))
    body = draw(byte_level(serialise(document)))
    auth = draw(st.sampled_from(["valid"] * 30 + ["missing", "garbage", "wrong-audience"]))
    return Case(path, body, auth, chunked=draw(st.integers(0, 9)) == 0)


def send(client: httpx.Client, base_url: str, private_key: bytes, case: Case) -> httpx.Response:
    """POST a case as an EHR would (the JWT's ``aud`` is the exact URL), over ``client``'s connections."""
    url = base_url.rstrip("/") + case.path
    headers = {"Content-Type": "application/json"}
    if case.auth == "valid":
        headers["Authorization"] = f"Bearer {sign_request_jwt(private_key, ISSUER, url)}"
    elif case.auth == "garbage":
        headers["Authorization"] = "Bearer eyJhbGciOiJub25lIn0.e30."
    elif case.auth == "wrong-audience":
        headers["Authorization"] = f"Bearer {sign_request_jwt(private_key, ISSUER, url + '/other')}"
    if case.chunked:  # no Content-Length: Transfer-Encoding chunked
        body = case.body
        return client.post(
            url, content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]), headers=headers
        )
    return client.post(url, content=case.body, headers=headers)
