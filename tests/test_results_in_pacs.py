"""Results in the PACS (issue #11): with HIPCAD_STORE_RESULTS the hook's analysis also goes back to the
study's own DICOMweb store (real Orthanc) as a TID 1500 SR and a heat-map Secondary Capture, which
the card's DiagnosticReport links (ImagingStudy + dicom-wado-rs Endpoint)."""

from __future__ import annotations

import highdicom as hd
import httpx
import requests
from dicomweb_client import DICOMwebClient

from tests.test_end_to_end import post
from tests.test_real_servers_end_to_end import chart, fhir_request  # noqa: F401 - module fixture


def _orthanc_client(orthanc_server) -> DICOMwebClient:
    session = requests.Session()
    session.auth = orthanc_server.auth
    return DICOMwebClient(url=orthanc_server.dicomweb_url, session=session)


def _service(make_service, orthanc_server, fhir_server, **changes):
    return make_service(
        fhir_allowed_bases=[fhir_server.base_url],
        dicomweb_allowed_bases=[orthanc_server.dicomweb_url],
        dicomweb_credentials={
            orthanc_server.dicomweb_url: {"username": orthanc_server.user, "password": orthanc_server.password}
        },
        **changes,
    )


MULTIPART_DICOM = {"Accept": 'multipart/related; type="application/dicom"'}


def _report(card: dict) -> dict:
    """The DiagnosticReport the card's suggestion would create."""
    action, provenance = card["suggestions"][0]["actions"]
    assert provenance["resource"]["resourceType"] == "Provenance"
    assert action["resource"]["resourceType"] == "DiagnosticReport"
    return action["resource"]


def _wado_rs_urls(report: dict) -> list[str]:
    """Each DICOM object the report links, as a FHIR client builds its URL: the ImagingStudy's
    dicom-wado-rs Endpoint.address + /studies/{uid}/series/{uid}/instances/{uid} (R4 ImagingStudy)."""
    contained = {f"#{r['id']}": r for r in report.get("contained", [])}
    urls = []
    for reference in report.get("imagingStudy", []):
        study = contained.get(reference["reference"])
        if study is None:  # the EHR's own ImagingStudy of the radiograph
            continue
        (endpoint,) = (contained[e["reference"]] for e in study["endpoint"])
        assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
        study_uid = study["identifier"][0]["value"].removeprefix("urn:oid:")
        urls += [
            f"{endpoint['address']}/studies/{study_uid}/series/{series['uid']}/instances/{instance['uid']}"
            for series in study["series"]
            for instance in series["instance"]
        ]
    return urls


def _results(client: DICOMwebClient, study_uid: str) -> dict[str, list[dict]]:
    series = client.search_for_series(study_instance_uid=study_uid)
    by_modality: dict[str, list[dict]] = {}
    for item in series:
        by_modality.setdefault(item["00080060"]["Value"][0], []).append(item)
    return by_modality


def test_a_radiologist_finds_the_ai_result_beside_the_images(
    make_service,
    orthanc_server,
    fhir_server,
    ehr_keys,
    chart,  # noqa: F811 - the imported module fixture
):
    service = _service(make_service, orthanc_server, fhir_server, store_results=True)
    answer = post(service, ehr_keys[0], fhir_request(fhir_server))
    assert answer.status_code == 200, answer.text
    card = answer.json()["cards"][0]
    assert "also in the PACS" in card["detail"]
    # The preliminary DiagnosticReport links both objects: WADO-RS URLs that retrieve them from the PACS.
    urls = _wado_rs_urls(_report(card))
    assert len(urls) == 2 and all(url.startswith(orthanc_server.dicomweb_url) for url in urls)
    for url in urls:
        retrieved = httpx.get(url, headers=MULTIPART_DICOM, auth=orthanc_server.auth, timeout=10)
        assert retrieved.status_code == 200, url

    client = _orthanc_client(orthanc_server)
    study_uid = str(chart.StudyInstanceUID)
    series = _results(client, study_uid)
    assert set(series) >= {"SR", "OT"}  # the SR and the Secondary Capture, each in a new series of the same study

    sr_series = series["SR"][0]["0020000E"]["Value"][0]
    (sr_instance,) = client.search_for_instances(study_instance_uid=study_uid, series_instance_uid=sr_series)
    sr = client.retrieve_instance(study_uid, sr_series, sr_instance["00080018"]["Value"][0])
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "COMPLETE"
    assert sr.StudyInstanceUID == chart.StudyInstanceUID and sr.PatientID == chart.PatientID
    groups = report.content.get_planar_roi_measurement_groups() + report.content.get_image_measurement_groups()
    assert len(groups) == 2  # one measurement group per hip

    # A second replica (fresh cache) analysing the same study with the same models stores nothing new.
    again = _service(make_service, orthanc_server, fhir_server, store_results=True)
    assert post(again, ehr_keys[0], fhir_request(fhir_server)).status_code == 200
    assert {m: len(s) for m, s in _results(client, study_uid).items()} == {m: len(s) for m, s in series.items()}


def test_results_are_not_stored_by_default(make_service, orthanc_server, fhir_server, ehr_keys, chart):  # noqa: F811
    service = _service(make_service, orthanc_server, fhir_server)
    card = post(service, ehr_keys[0], fhir_request(fhir_server)).json()["cards"][0]
    assert "also in the PACS" not in card["detail"]
    assert _wado_rs_urls(_report(card)) == []
