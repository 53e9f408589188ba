"""Results never cross patients, stores or studies (issue #9 regressions, real Triton and folder store).

Each test first lets patient A's study be analysed, so the result cache holds A's radiograph and
findings; then it asks as someone else, or for somewhere else, with the same UIDs. Before the fix
the cache was keyed by SOP Instance UID alone and consulted before the allow-list, so every one of
these requests received A's result.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pydicom
import pytest

from cds_service.analyser import UidMismatchError
from cds_service.analyser import check_uids as _check_uids
from cds_service.fhir.imaging_study import StudyRef
from tests.test_end_to_end import hook_request, post


def _study(request: dict) -> dict:
    return request["prefetch"]["studies"]["entry"][0]["resource"]


def _endpoint(request: dict) -> dict:
    return request["prefetch"]["studies"]["entry"][1]["resource"]


@pytest.fixture
def analysed(service, ehr_keys, dicom_store) -> dict:
    """Patient A's request, answered once (its result is in the cache now)."""
    request = hook_request(dicom_store)
    answer = post(service, ehr_keys[0], request)
    assert answer.status_code == 200 and answer.json()["cards"][0]["suggestions"], answer.text
    assert service.app.state.pipeline.store.local_keys()
    return request


def test_another_patient_naming_the_same_uids_gets_nothing_of_patient_a(service, ehr_keys, analysed, spans):
    other = copy.deepcopy(analysed)
    other["context"]["patientId"] = "pat-someone-else"
    answer = post(service, ehr_keys[0], other)  # A's study, but the subject is still Patient A
    assert answer.status_code == 200
    assert answer.json() == {"cards": []}  # the ImagingStudy's subject is not the patient asked about
    assert "cache_hit" not in {span.name for span in spans.get_finished_spans()}


def test_a_result_is_keyed_by_patient_even_when_the_subject_agrees(service, ehr_keys, analysed, spans):
    other = copy.deepcopy(analysed)
    other["context"]["patientId"] = "pat-b"
    _study(other)["subject"]["reference"] = "Patient/pat-b"  # a (mislabelled) study claiming the same UIDs
    spans.clear()
    answer = post(service, ehr_keys[0], other)
    assert answer.status_code == 200
    names = {span.name for span in spans.get_finished_spans()}
    assert "cache_hit" not in names and "fetch" in names  # analysed afresh for B, never A's cached result
    report = answer.json()["cards"][0]["suggestions"][0]["actions"][0]["resource"]
    assert report["subject"]["reference"] == "Patient/pat-b"


def test_a_store_not_on_the_allow_list_gets_no_cached_result(service, ehr_keys, analysed, tmp_path, spans):
    other = copy.deepcopy(analysed)
    _endpoint(other)["address"] = (tmp_path / "not-allowed").as_uri()  # same UIDs, another store
    spans.clear()
    answer = post(service, ehr_keys[0], other)
    assert answer.status_code == 200
    (card,) = answer.json()["cards"]
    assert "unavailable" in card["summary"] and "suggestions" not in card  # no finding, no radiograph
    names = {span.name for span in spans.get_finished_spans()}
    assert "cache_hit" not in names and "fetch" not in names


def test_traversal_out_of_the_folder_store_is_refused(service, ehr_keys, analysed, dicom_store):
    other = copy.deepcopy(analysed)
    _endpoint(other)["address"] = dicom_store.as_uri() + "/../../etc"
    answer = post(service, ehr_keys[0], other)
    assert answer.status_code == 200
    (card,) = answer.json()["cards"]
    assert "unavailable" in card["summary"] and "suggestions" not in card


def test_a_study_whose_subject_is_another_patient_is_not_analysed(service, ehr_keys, dicom_store, spans):
    request = hook_request(dicom_store)
    _study(request)["subject"]["reference"] = "Patient/somebody-else"
    answer = post(service, ehr_keys[0], request)
    assert answer.status_code == 200 and answer.json() == {"cards": []}
    assert "fetch" not in {span.name for span in spans.get_finished_spans()}


@pytest.mark.parametrize(
    ("study_uid", "sop_uid", "named_sop", "reason"),
    [
        ("1.2.3.9", "1.2.3.4.5", "1.2.3.4.5", "another study"),
        ("1.2.3", "1.2.3.4.6", "1.2.3.4.5", "not the one"),
        ("1.2.3", "", None, "no SOP Instance UID"),
    ],
)
def test_an_instance_that_is_not_the_one_named_is_refused(study_uid, sop_uid, named_sop, reason):
    """A store that answers with another instance than the ImagingStudy names (a PACS bug, a mix-up)."""
    retrieved = pydicom.Dataset()
    retrieved.StudyInstanceUID, retrieved.SOPInstanceUID = study_uid, sop_uid
    named = StudyRef(None, "1.2.3", None, named_sop, "file:///x", None)
    with pytest.raises(UidMismatchError, match=reason):
        _check_uids(retrieved, named)
    retrieved.StudyInstanceUID, retrieved.SOPInstanceUID = "1.2.3", named_sop or "1.2.3.4.7"
    assert _check_uids(retrieved, named) == retrieved.SOPInstanceUID


def test_without_instance_uids_the_result_is_cached_by_the_retrieved_instance(service, ehr_keys, dicom_store, spans):
    request = hook_request(dicom_store)
    del _study(request)["series"][0]["instance"]
    assert post(service, ehr_keys[0], request).json()["cards"][0]["suggestions"]
    keys = service.app.state.pipeline.store.local_keys()
    ds = pydicom.dcmread(next(Path(dicom_store).rglob("*.dcm")), stop_before_pixels=True)
    assert [key.sop_instance_uid for key in keys] == [str(ds.SOPInstanceUID)]
    spans.clear()
    assert post(service, ehr_keys[0], request).json()["cards"][0]["suggestions"]
    names = {span.name for span in spans.get_finished_spans()}
    assert "cache_hit" in names and "infer" not in names  # fetched again to learn the UID, not re-analysed


def test_results_are_kept_apart_per_caller(service, ehr_keys, analysed, spans):
    """The same patient and study asked by another issuer/tenant is analysed for that caller afresh."""
    from cds_service.cdshooks.requests import parse_hook_request

    pipeline = service.app.state.pipeline
    request = parse_hook_request(json.dumps(analysed).encode(), "order-select", max_depth=64, max_number_digits=64)
    spans.clear()
    service.portal.call(pipeline.handle, request, "hipcad-demo-ehr")  # the issuer the fixture's request used
    assert "cache_hit" in {span.name for span in spans.get_finished_spans()}
    spans.clear()
    outcome = service.portal.call(pipeline.handle, request, "another-ehr|tenant-2")
    names = {span.name for span in spans.get_finished_spans()}
    assert "cache_hit" not in names and "infer" in names and outcome.response.cards[0].suggestions
