"""Steps for pacs_down.feature: a hanging PACS and a PACS that refuses our credentials (real Orthanc)."""

from __future__ import annotations

import time

import pydicom
from pytest_bdd import given, scenarios, then, when

from cds_service.cdshooks.conformance import check_response
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.training.phantoms import write_sample_study
from tests.test_end_to_end import post
from tests.test_real_servers_end_to_end import hanging_pacs  # noqa: F401 - fixture

scenarios("pacs_down.feature")

DEADLINE_S = 3.0


def _request(ds: pydicom.Dataset, address: str) -> dict:
    template = load_example("order-select.json")
    return with_studies(template, imaging_study_bundle(ds, template["context"]["patientId"], address))


@given("the patient's radiograph lives on a PACS that has stopped answering", target_fixture="setup")
def _hanging(make_service, hanging_pacs, dicom_store):  # noqa: F811
    ds = pydicom.dcmread(next(dicom_store.glob("*.dcm")), stop_before_pixels=True)
    client = make_service(dicomweb_allowed_bases=[hanging_pacs.url], dicomweb_timeout_s=1.0, hook_deadline_s=DEADLINE_S)
    return client, _request(ds, hanging_pacs.url)


@given("the patient's radiograph is on a PACS that refuses the service's credentials", target_fixture="setup")
def _refusing(make_service, orthanc_server, tmp_path):
    path = write_sample_study(tmp_path, seed=31)
    orthanc_server.upload(path.read_bytes())
    client = make_service(
        dicomweb_allowed_bases=[orthanc_server.dicomweb_url],
        dicomweb_credentials={orthanc_server.dicomweb_url: {"username": "hipcad", "password": "wrong"}},
        hook_deadline_s=DEADLINE_S,
    )
    return client, _request(pydicom.dcmread(path, stop_before_pixels=True), orthanc_server.dicomweb_url)


@when("the EHR sends an order-select hook for a hip X-ray", target_fixture="answer")
def _send(setup, ehr_keys):
    client, request = setup
    started = time.perf_counter()
    response = post(client, ehr_keys[0], request)
    return response, time.perf_counter() - started


@then("the EHR gets an answer within the hook deadline")
def _in_time(answer):
    response, elapsed = answer
    assert response.status_code == 200 and elapsed < DEADLINE_S + 0.5


@then("the card honestly says the AI analysis is unavailable")
def _honest(answer):
    body = answer[0].json()
    assert check_response(body) == []
    assert body["cards"][0]["indicator"] == "info" and "unavailable" in body["cards"][0]["summary"]
