"""Typed, bounded parsing of CDS Hooks 2.0 hook requests: any malformed body is a 400, never a 500.

Three layers, cheapest first:

1. **JSON bounds** (:func:`load_json`): nesting deeper than ``max_depth`` is refused by a pre-scan
   that skips string contents (no ``RecursionError`` can be reached), number literals longer than
   ``max_number_digits`` characters, ``NaN``/``Infinity`` and non-finite floats are refused by the
   ``json.loads`` hooks, and so are duplicate object keys (RFC 7493 §2.3) and unpaired UTF-16
   surrogates (which break every UTF-8 encoder later).
2. **The request envelope** (:class:`~cds_service.cdshooks.models.HookRequest`).
3. **The hook's context** (https://cds-hooks.hl7.org/2.0/ hook definitions): ``patient-view``
   (``userId``, ``patientId``, optional ``encounterId``), ``order-select`` (plus ``selections`` and
   ``draftOrders``; every selection must name a ``draftOrders`` entry as ``ResourceType/id``) and
   ``order-sign`` (plus ``draftOrders``); and ``prefetch.studies``: absent, ``null`` (the CDS
   Client tried and has no data), an ``OperationOutcome`` (its search failed) or a ``Bundle`` whose
   ImagingStudy and Endpoint resources carry the right types in every field the service reads.

Extra fields are allowed everywhere (FHIR resources carry many); fields the service reads must have
the right JSON types (strict: ``5`` is not a string). The validated dicts are handed on unchanged,
so the pipeline keeps reading plain dicts. Error messages name the failing field path and the rule,
never the value (request values are patient data).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from cds_service.cdshooks.models import HookRequest
from cds_service.errors import BadRequestError

#: FHIR ``id`` (http://hl7.org/fhir/R4/datatypes.html#id): what ``patientId`` / ``encounterId`` are.
FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_MAX_REPORTED_ERRORS = 5


class RequestShapeError(ValueError):
    """A value does not have the shape the service reads; ``errors`` holds (path, rule) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        shown = "; ".join(f"{path}: {rule}" for path, rule in errors[:_MAX_REPORTED_ERRORS])
        more = f" (and {len(errors) - _MAX_REPORTED_ERRORS} more)" if len(errors) > _MAX_REPORTED_ERRORS else ""
        super().__init__(shown + more)


# JSON bounds ----------------------------------------------------------------------------------------
class _JsonBoundError(ValueError):
    pass


def json_depth(body: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in ``body``, string contents skipped (C-speed scan)."""
    stripped = _STRING.sub(b"", body)
    codes = np.frombuffer(stripped, dtype=np.uint8)
    steps = np.zeros(codes.shape, dtype=np.int32)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max()) if steps.size else 0


def load_json(body: bytes, *, max_depth: int, max_number_digits: int) -> Any:
    """``json.loads`` with bounds; raises BadRequestError (the message names the bound, not the data)."""

    def number(literal: str, convert: Any) -> Any:
        if len(literal) > max_number_digits:
            raise _JsonBoundError(f"a number is longer than {max_number_digits} characters")
        value = convert(literal)
        if isinstance(value, float) and not math.isfinite(value):
            raise _JsonBoundError("a number is out of range")
        return value

    def constant(name: str) -> Any:
        raise _JsonBoundError(f"{name} is not valid JSON")

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # RFC 8259 §4 leaves duplicate names' meaning to the parser (json keeps the last, others the
        # first): a value the service reads could differ from the one the EHR logged. I-JSON (RFC 7493
        # §2.3) forbids them; the key is not named (keys a client invents may carry data).
        value = dict(pairs)
        if len(value) != len(pairs):
            raise _JsonBoundError("an object has a duplicate key")
        return value

    if json_depth(body) > max_depth:
        raise BadRequestError(f"request body is nested deeper than {max_depth} levels")
    try:
        value = json.loads(
            body,
            parse_int=lambda s: number(s, int),
            parse_float=lambda s: number(s, float),
            parse_constant=constant,
            object_pairs_hook=unique_keys,
        )
    except _JsonBoundError as exc:
        raise BadRequestError(f"request body refused: {exc}") from None
    except RecursionError:  # belt and braces: the pre-scan should have caught it
        raise BadRequestError(f"request body is nested deeper than {max_depth} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise BadRequestError("request body is not valid JSON") from None
    try:  # a lone surrogate ("\ud800") parses, then breaks every UTF-8 encoder (logs, SQLite, responses)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequestError("request body holds an unpaired UTF-16 surrogate escape") from None
    return value


# Error reporting ------------------------------------------------------------------------------------
_RULES = {
    "missing": "is required",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "bool_type": "must be a boolean",
    "int_type": "must be an integer",
}


def _rule(error: Any) -> str:
    kind = error["type"]
    if kind in _RULES:
        return _RULES[kind]
    if kind == "literal_error":
        return f"must be {error.get('ctx', {}).get('expected', 'one of the allowed values')}"
    if kind == "string_pattern_mismatch":
        return "must be a FHIR id (letters, digits, '-', '.'; 1 to 64 characters)"
    if kind in ("value_error", "assertion_error"):
        return str(error.get("ctx", {}).get("error", "is invalid"))
    return str(error.get("msg", "is invalid")).lower()  # pydantic messages name the rule, not the input


def shape_errors(exc: ValidationError, prefix: str) -> list[tuple[str, str]]:
    """(path, rule) pairs of a pydantic error, paths prefixed (``context.draftOrders.entry.0…``)."""
    pairs = []
    for error in exc.errors(include_url=False, include_input=False):
        path = ".".join([prefix, *(str(p) for p in error["loc"])]) if prefix else ".".join(map(str, error["loc"]))
        pairs.append((path or "body", _rule(error)))
    return pairs


def _check(model: type[BaseModel], data: Any, prefix: str, errors: list[tuple[str, str]]) -> BaseModel | None:
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        errors.extend(shape_errors(exc, prefix))
        return None


# FHIR pieces the service reads ------------------------------------------------------------------------
class _Fhir(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Coding(_Fhir):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(_Fhir):
    coding: list[Coding] | None = None
    text: str | None = None


class Reference(_Fhir):
    reference: str | None = None
    display: str | None = None


class Identifier(_Fhir):
    system: str | None = None
    value: str | None = None


class DraftResource(_Fhir):
    """A draft order (ServiceRequest, MedicationRequest…): what relevance reads."""

    resourceType: str = Field(min_length=1)
    id: str | None = None
    code: CodeableConcept | None = None


class DraftEntry(_Fhir):
    resource: DraftResource | None = None


class DraftOrders(_Fhir):
    """``context.draftOrders``: a FHIR Bundle of draft orders."""

    resourceType: Literal["Bundle"]
    entry: list[DraftEntry] | None = None

    def references(self) -> set[str]:
        """``ResourceType/id`` of each entry (what ``selections`` name)."""
        return {f"{e.resource.resourceType}/{e.resource.id}" for e in self.entry or [] if e.resource and e.resource.id}


class PatientViewContext(_Fhir):
    """patient-view: the chart of ``patientId`` is opened by ``userId``."""

    userId: str = Field(min_length=1)
    patientId: str = Field(pattern=FHIR_ID)
    encounterId: str | None = Field(None, pattern=FHIR_ID)


class OrderSignContext(PatientViewContext):
    """order-sign: the orders in ``draftOrders`` are about to be signed."""

    draftOrders: DraftOrders


class OrderSelectContext(OrderSignContext):
    """order-select: ``selections`` (``ResourceType/id``) name the newly selected ``draftOrders`` entries."""

    selections: list[str]

    @field_validator("selections")
    @classmethod
    def _selections_are_draft_orders(cls, selections: list[str], info: ValidationInfo) -> list[str]:
        draft_orders = info.data.get("draftOrders")
        if draft_orders is None:  # draftOrders itself is invalid: reported on its own
            return selections
        known = draft_orders.references()
        for index, selection in enumerate(selections):
            if selection not in known:
                raise ValueError(f"item {index} must name a draftOrders entry as ResourceType/id")
        return selections


CONTEXT_MODELS: dict[str, type[PatientViewContext]] = {
    "patient-view": PatientViewContext,
    "order-select": OrderSelectContext,
    "order-sign": OrderSignContext,
}


# Prefetched studies -------------------------------------------------------------------------------
class Endpoint(_Fhir):
    resourceType: Literal["Endpoint"]
    id: str | None = None
    address: str | None = None
    connectionType: Coding | None = None


class Instance(_Fhir):
    uid: str | None = None
    title: str | None = None
    sopClass: Coding | None = None


class Series(_Fhir):
    uid: str | None = None
    modality: Coding | None = None
    bodySite: Coding | None = None
    description: str | None = None
    endpoint: list[Reference] | None = None
    instance: list[Instance] | None = None


class ImagingStudy(_Fhir):
    """The fields of an ImagingStudy that ``cds_service.fhir.imaging_study`` reads, with their types.

    ``started`` is a string: a FHIR dateTime, but a time-zone-less or partial one is accepted here
    (the study selection treats an unparsable date as the oldest).
    """

    resourceType: Literal["ImagingStudy"]
    id: str | None = None
    status: str | None = None
    started: str | None = None
    identifier: list[Identifier] | None = None
    modality: list[Coding] | None = None
    description: str | None = None
    basedOn: list[Reference] | None = None
    endpoint: list[Reference] | None = None
    subject: Reference | None = None
    series: list[Series] | None = None
    contained: list[dict[str, Any]] | None = None


class Resource(_Fhir):
    resourceType: str = Field(min_length=1)


class BundleEntry(_Fhir):
    resource: dict[str, Any] | None = None


class BundleLink(_Fhir):
    relation: str
    url: str


class StudiesBundle(_Fhir):
    resourceType: Literal["Bundle"]
    entry: list[BundleEntry] | None = None
    link: list[BundleLink] | None = None


def _check_studies(value: Any, prefix: str, errors: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        errors.append((prefix, "must be a Bundle, an OperationOutcome or null"))
        return
    if value.get("resourceType") == "OperationOutcome":
        return  # the CDS Client's search failed: the service searches itself
    bundle = _check(StudiesBundle, value, prefix, errors)
    if bundle is None:
        return
    for i, entry in enumerate(value.get("entry") or []):
        resource = entry.get("resource")
        if resource is None:
            continue
        where = f"{prefix}.entry.{i}.resource"
        if _check(Resource, resource, where, errors) is None:
            continue
        kind = resource["resourceType"]
        if kind == "Endpoint":
            _check(Endpoint, resource, where, errors)
        elif kind == "ImagingStudy" and _check(ImagingStudy, resource, where, errors) is not None:
            for j, contained in enumerate(resource.get("contained") or []):
                if contained.get("resourceType") == "Endpoint":
                    _check(Endpoint, contained, f"{where}.contained.{j}", errors)


def studies_bundle(value: Any) -> dict[str, Any] | None:
    """A studies search result checked for what the study selection reads.

    Returns the Bundle (the same dict), or None for ``null`` / an OperationOutcome (no data).
    Raises :class:`RequestShapeError` (a ``ValueError``) naming the failing paths otherwise.
    """
    errors: list[tuple[str, str]] = []
    _check_studies(value, "studies", errors)
    if errors:
        raise RequestShapeError(errors)
    if value is None or value.get("resourceType") == "OperationOutcome":
        return None
    return value


# The public entry point ----------------------------------------------------------------------------
def validate_hook_request(data: Any, expected_hook: str) -> HookRequest:
    """Validate a parsed body as a request for ``expected_hook``; raises BadRequestError."""
    if not isinstance(data, dict):
        raise BadRequestError("invalid hook request: body: must be a JSON object")
    try:
        request = HookRequest.model_validate(data)
    except ValidationError as exc:
        raise BadRequestError(f"invalid hook request: {RequestShapeError(shape_errors(exc, ''))}") from None
    if request.hook != expected_hook:
        raise BadRequestError(f"invalid hook request: hook: this service answers {expected_hook!r}")
    errors: list[tuple[str, str]] = []
    model = CONTEXT_MODELS.get(expected_hook)
    typed = _check(model, request.context, "context", errors) if model else None
    if request.prefetch is not None and "studies" in request.prefetch:
        _check_studies(request.prefetch["studies"], "prefetch.studies", errors)
    if errors:
        raise BadRequestError(f"invalid hook request: {RequestShapeError(errors)}")
    request.typed_context = typed
    return request


def parse_hook_request(body: bytes, expected_hook: str, *, max_depth: int, max_number_digits: int) -> HookRequest:
    """Parse and validate a hook request body; raises BadRequestError naming the failing field."""
    data = load_json(body, max_depth=max_depth, max_number_digits=max_number_digits)
    return validate_hook_request(data, expected_hook)


__all__ = [
    "CONTEXT_MODELS",
    "OrderSelectContext",
    "OrderSignContext",
    "PatientViewContext",
    "RequestShapeError",
    "json_depth",
    "load_json",
    "parse_hook_request",
    "shape_errors",
    "studies_bundle",
    "validate_hook_request",
]
