"""Every non-2xx answer of the CDS Hooks API is a FHIR OperationOutcome (CDS Hooks 3.0 ballot § Returning
OperationOutcome), while the status codes and headers a 2.0 client reads stay as they were."""

from __future__ import annotations

import pytest

from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.ehr import load_example
from cds_service.errors import ISSUE_CODES, operation_outcome_json
from tests.test_end_to_end import SERVICE_PATH, hook_request


def token_for(client, private_key: bytes, path: str) -> dict[str, str]:
    token = sign_request_jwt(private_key, "hipcad-demo-ehr", str(client.base_url).rstrip("/") + path)
    return {"Authorization": f"Bearer {token}"}


def assert_operation_outcome(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    (issue,) = body["issue"]
    assert issue["severity"] == "error" and issue["code"] and issue["diagnostics"]
    return issue


def test_the_body_names_an_issue_type_for_each_status():
    assert operation_outcome_json(404, "unknown")["issue"][0]["code"] == "not-found"
    assert operation_outcome_json(418, "odd")["issue"][0]["code"] == "processing"
    assert operation_outcome_json(599, "odd")["issue"][0]["code"] == "exception"
    assert set(ISSUE_CODES) >= {400, 401, 404, 405, 412, 413, 500, 503}


@pytest.mark.parametrize("path", ["/cds-services", SERVICE_PATH, SERVICE_PATH + "/feedback"])
def test_401_without_a_jwt(service, path):
    response = service.get(path) if path == "/cds-services" else service.post(path, json={})
    assert assert_operation_outcome(response, 401)["code"] == "login"
    assert response.headers["www-authenticate"] == "Bearer"  # RFC 6750


def test_401_with_a_wrong_audience_does_not_say_which(service, ehr_keys):
    response = service.get("/cds-services", headers=token_for(service, ehr_keys[0], "/elsewhere"))
    issue = assert_operation_outcome(response, 401)
    assert "audience" not in issue["diagnostics"] and "/elsewhere" not in issue["diagnostics"]


def test_404_unknown_service_and_unknown_route(service, ehr_keys):
    path = "/cds-services/no-such-service"
    assert_operation_outcome(service.post(path, json={}, headers=token_for(service, ehr_keys[0], path)), 404)
    assert_operation_outcome(service.get("/no/such/route"), 404)


def test_405_keeps_the_allow_header(service):
    response = service.get(SERVICE_PATH)
    assert assert_operation_outcome(response, 405)["code"] == "not-supported"
    assert "POST" in response.headers["allow"]


def test_400_412_413_are_operation_outcomes(make_service, ehr_keys, dicom_store):
    client = make_service(max_request_bytes=2000)
    headers = {**token_for(client, ehr_keys[0], SERVICE_PATH), "Content-Type": "application/json"}
    assert_operation_outcome(client.post(SERVICE_PATH, content=b"{nope", headers=headers), 400)
    no_data = load_example("order-select.json")
    no_data.pop("fhirServer")
    no_data.pop("prefetch")
    headers = token_for(client, ehr_keys[0], SERVICE_PATH)
    assert_operation_outcome(client.post(SERVICE_PATH, json=no_data, headers=headers), 412)
    headers = token_for(client, ehr_keys[0], SERVICE_PATH)
    assert_operation_outcome(client.post(SERVICE_PATH, json=hook_request(dicom_store), headers=headers), 413)
