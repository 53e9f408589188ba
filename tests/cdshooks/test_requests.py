"""Typed hook requests (cds_service.cdshooks.requests): each context model, the prefetch, the JSON bounds."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from cds_service.cdshooks.models import HookRequest
from cds_service.cdshooks.requests import (
    OrderSelectContext,
    OrderSignContext,
    PatientViewContext,
    RequestShapeError,
    json_depth,
    load_json,
    parse_hook_request,
    studies_bundle,
)
from cds_service.ehr import load_example
from cds_service.errors import BadRequestError

BOUNDS = {"max_depth": 64, "max_number_digits": 64}


def studies() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": "http://fhir.example/ImagingStudy?patient=1"}],
        "entry": [
            {
                "resource": {
                    "resourceType": "ImagingStudy",
                    "id": "s1",
                    "status": "available",
                    "started": "2026-11-22T09:00:00",  # no time zone: accepted as a string
                    "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
                    "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}],
                    "subject": {"reference": "Patient/pat-hip-1"},
                    "basedOn": [{"reference": "ServiceRequest/xr-hip-1"}],
                    "endpoint": [{"reference": "#ep"}],
                    "contained": [
                        {
                            "resourceType": "Endpoint",
                            "id": "ep",
                            "address": "https://pacs.example/dicom-web",
                            "connectionType": {"code": "dicom-wado-rs"},
                        }
                    ],
                    "series": [
                        {
                            "uid": "1.2.3.4",
                            "modality": {"code": "DX"},
                            "bodySite": {"code": "12921003", "display": "Pelvis"},
                            "instance": [{"uid": "1.2.3.4.5", "title": "AP", "sopClass": {"code": "urn:oid:1.2"}}],
                        }
                    ],
                    "numberOfSeries": 1,  # not read: any type passes
                }
            },
            {"resource": {"resourceType": "Patient", "id": 7, "name": "passed through untouched"}},
        ],
    }


def body(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode()


def parse(request: dict[str, Any] | bytes, hook: str | None = None) -> HookRequest:
    data = request if isinstance(request, bytes) else body(request)
    hook = hook or (request["hook"] if isinstance(request, dict) else "order-select")
    return parse_hook_request(data, hook, **BOUNDS)


def refused(request: dict[str, Any] | bytes, hook: str | None = None) -> str:
    with pytest.raises(BadRequestError) as caught:
        parse(request, hook)
    return str(caught.value)


# Context models -------------------------------------------------------------------------------
def test_each_example_parses_into_its_typed_context():
    expected = {
        "order-select.json": OrderSelectContext,
        "order-sign.json": OrderSignContext,
        "patient-view.json": PatientViewContext,
        "order-select-irrelevant.json": OrderSelectContext,
    }
    for name, model in expected.items():
        example = load_example(name)
        request = parse(example)
        assert type(request.typed_context) is model
        assert request.context == example["context"]  # the pipeline's plain dict, unchanged
        assert request.prefetch == example.get("prefetch")


def test_hook_request_model_validate_still_works_on_dicts():
    request = HookRequest.model_validate(load_example("order-select.json"))
    assert request.typed_context is None and request.context["patientId"] == "pat-hip-1"


def test_patient_view_context():
    context = PatientViewContext.model_validate({"userId": "Practitioner/1", "patientId": "p-1"}, strict=True)
    assert context.encounterId is None
    for bad in ({"userId": "Practitioner/1"}, {"patientId": "p-1"}, {"userId": "u", "patientId": 1}):
        with pytest.raises(ValidationError):
            PatientViewContext.model_validate(bad, strict=True)


def test_order_sign_needs_draft_orders_and_not_selections():
    context = load_example("order-sign.json")["context"]
    assert OrderSignContext.model_validate(context, strict=True).draftOrders.references() == {"ServiceRequest/xr-hip-1"}
    with pytest.raises(ValidationError):
        OrderSignContext.model_validate({k: v for k, v in context.items() if k != "draftOrders"}, strict=True)


def test_order_select_needs_selections():
    request = load_example("order-select.json")
    del request["context"]["selections"]
    assert "context.selections: is required" in refused(request)


def test_selections_must_name_draft_orders():
    request = load_example("order-select.json")
    request["context"]["selections"] = ["ServiceRequest/xr-hip-1", "ServiceRequest/elsewhere"]
    message = refused(request)
    assert "context.selections" in message and "item 1 must name a draftOrders entry" in message
    assert "elsewhere" not in message  # the value is not echoed


def test_draft_orders_must_be_a_bundle():
    request = load_example("order-sign.json")
    request["context"]["draftOrders"]["resourceType"] = "Parameters"
    assert "context.draftOrders.resourceType: must be 'Bundle'" in refused(request)


def test_patient_id_must_be_a_fhir_id():
    request = load_example("patient-view.json")
    request["context"]["patientId"] = "../Patient?_id=x"
    assert "context.patientId: must be a FHIR id" in refused(request)


def test_hook_must_match_the_service():
    assert "hook: this service answers 'order-sign'" in refused(load_example("order-select.json"), "order-sign")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("userId",), 5, "context.userId: must be a string"),
        (("patientId",), None, "context.patientId: must be a string"),
        (("encounterId",), ["e"], "context.encounterId: must be a string"),
        (("selections",), "ServiceRequest/xr-hip-1", "context.selections: must be a list"),
        (("selections", 0), 3, "context.selections.0: must be a string"),
        (("draftOrders",), [], "context.draftOrders: must be an object"),
        (("draftOrders", "entry"), {}, "context.draftOrders.entry: must be a list"),
        (("draftOrders", "entry", 0), "x", "context.draftOrders.entry.0: must be an object"),
        (("draftOrders", "entry", 0, "resource"), 1, "context.draftOrders.entry.0.resource: must be an object"),
        (("draftOrders", "entry", 0, "resource", "resourceType"), 1, "entry.0.resource.resourceType: must be a str"),
        (("draftOrders", "entry", 0, "resource", "id"), 1, "context.draftOrders.entry.0.resource.id: must be a string"),
        (("draftOrders", "entry", 0, "resource", "code"), 5, "context.draftOrders.entry.0.resource.code: must be an"),
        (("draftOrders", "entry", 0, "resource", "code", "coding"), {}, "resource.code.coding: must be a list"),
        (("draftOrders", "entry", 0, "resource", "code", "coding", 0), [], "resource.code.coding.0: must be an obj"),
        (("draftOrders", "entry", 0, "resource", "code", "coding", 0, "code"), 5, "code.coding.0.code: must be a str"),
        (("draftOrders", "entry", 0, "resource", "code", "coding", 0, "system"), [], "coding.0.system: must be a str"),
        (("draftOrders", "entry", 0, "resource", "code", "coding", 0, "display"), 1, "0.display: must be a string"),
        (("draftOrders", "entry", 0, "resource", "code", "text"), True, "resource.code.text: must be a string"),
    ],
)
def test_bad_types_in_the_context_name_the_field(path, value, message):
    request = load_example("order-select.json")
    target = request["context"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    text = refused(request)
    assert message in text, text


def test_extra_fields_are_allowed():
    request = load_example("order-select.json")
    request["context"]["somethingElse"] = {"x": [1, 2]}
    request["context"]["draftOrders"]["entry"][0]["resource"]["code"]["coding"][0]["userSelected"] = True
    request["extension"] = {"com.example.x": 1}
    assert parse(request).context["somethingElse"] == {"x": [1, 2]}


def test_envelope_errors_name_the_field():
    request = load_example("order-select.json")
    request["hookInstance"] = 7
    assert "hookInstance: " in refused(request)
    assert "body: must be a JSON object" in refused(b"[]")
    request = load_example("order-select.json")
    request["fhirAuthorization"] = {"access_token": "secret-token", "token_type": "Bearer"}
    message = refused(request)
    assert "fhirAuthorization.expires_in: is required" in message and "secret-token" not in message


# Prefetch -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [None, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}],
)
def test_prefetch_null_or_operation_outcome_means_no_data(value):
    request = load_example("order-select.json")
    request["prefetch"]["studies"] = value
    assert parse(request).prefetch["studies"] == value
    assert studies_bundle(value) is None


def test_prefetch_absent():
    request = load_example("order-select.json")
    request.pop("prefetch")
    assert parse(request).prefetch is None


def test_prefetched_bundle_with_a_tz_less_started_is_accepted_unchanged():
    request = load_example("order-select.json")
    request["prefetch"]["studies"] = studies()
    parsed = parse(request)
    assert parsed.prefetch["studies"] == studies()
    assert parsed.prefetch["studies"]["entry"][0]["resource"]["started"] == "2026-11-22T09:00:00"
    assert studies_bundle(studies()) == studies()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(entry={}), "prefetch.studies.entry: must be a list"),
        (lambda s: s.update(link=[{"relation": "next"}]), "prefetch.studies.link.0.url: is required"),
        (lambda s: s["entry"][0].update(resource=[1]), "prefetch.studies.entry.0.resource: must be an object"),
        (lambda s: s["entry"][1]["resource"].pop("resourceType"), "entry.1.resource.resourceType: is required"),
        (lambda s: _study(s).update(series="x"), "prefetch.studies.entry.0.resource.series: must be a list"),
        (lambda s: _study(s).update(started=20261122), "entry.0.resource.started: must be a string"),
        (lambda s: _study(s).update(id=1), "entry.0.resource.id: must be a string"),
        (lambda s: _study(s).update(status=None) or _study(s).update(status=[]), "resource.status: must be a str"),
        (lambda s: _study(s)["identifier"][0].update(value=1), "resource.identifier.0.value: must be a string"),
        (lambda s: _study(s).update(modality=[{"code": 1}]), "resource.modality.0.code: must be a string"),
        (lambda s: _study(s).update(description={}), "entry.0.resource.description: must be a string"),
        (lambda s: _study(s).update(basedOn=[{"reference": 1}]), "resource.basedOn.0.reference: must be a str"),
        (lambda s: _study(s).update(endpoint={"reference": "#ep"}), "entry.0.resource.endpoint: must be a list"),
        (lambda s: _study(s).update(subject="Patient/1"), "entry.0.resource.subject: must be an object"),
        (lambda s: _study(s).update(contained=["x"]), "resource.contained.0: must be an object"),
        (lambda s: _series(s).update(uid=1), "resource.series.0.uid: must be a string"),
        (lambda s: _series(s).update(modality="DX"), "resource.series.0.modality: must be an object"),
        (lambda s: _series(s).update(bodySite={"code": 1}), "series.0.bodySite.code: must be a string"),
        (lambda s: _series(s).update(description=1), "resource.series.0.description: must be a string"),
        (lambda s: _series(s).update(endpoint=[1]), "resource.series.0.endpoint.0: must be an object"),
        (lambda s: _series(s)["instance"][0].update(uid=1), "series.0.instance.0.uid: must be a string"),
        (lambda s: _series(s)["instance"][0].update(title=[]), "series.0.instance.0.title: must be a string"),
        (lambda s: _series(s)["instance"][0].update(sopClass="x"), "instance.0.sopClass: must be an object"),
        (lambda s: _endpoint(s).update(address=5), "resource.contained.0.address: must be a string"),
        (lambda s: _endpoint(s).update(connectionType="x"), "contained.0.connectionType: must be an object"),
        (lambda s: _endpoint(s).update(id=5), "resource.contained.0.id: must be a string"),
    ],
)
def test_bad_types_in_prefetched_studies_name_the_field(mutate, message):
    request = load_example("order-select.json")
    bundle = studies()
    mutate(bundle)
    request["prefetch"]["studies"] = bundle
    text = refused(request)
    assert message in text, text
    with pytest.raises(RequestShapeError):
        studies_bundle(copy.deepcopy(bundle))


def test_bundle_level_endpoint_is_checked_too():
    bundle = studies()
    bundle["entry"].append({"resource": {"resourceType": "Endpoint", "id": "e2", "address": ["x"]}})
    with pytest.raises(ValueError, match=r"studies.entry.2.resource.address: must be a string"):
        studies_bundle(bundle)


@pytest.mark.parametrize("value", ["Bundle", 5, [], {"resourceType": "ImagingStudy"}])
def test_studies_that_are_neither_bundle_nor_outcome_nor_null_are_refused(value):
    request = load_example("order-select.json")
    request["prefetch"]["studies"] = value
    assert "prefetch.studies" in refused(request)


def _study(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle["entry"][0]["resource"]


def _series(bundle: dict[str, Any]) -> dict[str, Any]:
    return _study(bundle)["series"][0]


def _endpoint(bundle: dict[str, Any]) -> dict[str, Any]:
    return _study(bundle)["contained"][0]


# JSON bounds ----------------------------------------------------------------------------------
def test_depth_scan_skips_strings():
    assert json_depth(b'{"a": "[[[[[[[[[[", "b": [1, [2]]}') == 3
    assert json_depth(b'["\\"[[[[", {"x": "\\\\"}]') == 2
    assert json_depth(b"") == 0


def test_depth_bound():
    assert load_json(b"[" * 64 + b"]" * 64, **BOUNDS) == load_json(b"[" * 64 + b"]" * 64, **BOUNDS)
    with pytest.raises(BadRequestError, match="nested deeper than 64"):
        load_json(b"[" * 65 + b"]" * 65, **BOUNDS)
    with pytest.raises(BadRequestError, match="nested deeper"):
        load_json(b'{"a": ' + b"[" * 100_000, **BOUNDS)  # no RecursionError


def test_number_bounds():
    assert load_json(b"[" + b"9" * 64 + b"]", **BOUNDS) == [int("9" * 64)]
    for literal in (b"9" * 65, b"1" * 10_000, b"0." + b"1" * 70, b"-" + b"1" * 64):
        with pytest.raises(BadRequestError, match="longer than 64"):
            load_json(b"[" + literal + b"]", **BOUNDS)
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        with pytest.raises(BadRequestError):
            load_json(b"[" + literal + b"]", **BOUNDS)


def test_not_json_and_bad_encodings_are_400():
    for data in (b"", b"{not json", b"\xff\xfe\x00", b'{"a": "\xc3"}', b'"\\ud800"', b'{"\\udc00": 1}'):
        with pytest.raises(BadRequestError):
            load_json(data, **BOUNDS)
    assert load_json(b'"\\ud83d\\ude00"', **BOUNDS) == "\U0001f600"  # a proper pair is fine


def test_parse_hook_request_applies_the_bounds():
    request = load_example("patient-view.json")
    request["context"]["deep"] = json.loads("[" * 70 + "]" * 70)
    assert "nested deeper" in refused(request)
    assert "longer than" in refused(b'{"hook": "patient-view", "n": 1' + b"0" * 100 + b"}", "patient-view")
