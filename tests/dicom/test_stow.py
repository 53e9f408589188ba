"""STOW-RS of the SR and SC into the source study on a real Orthanc; idempotent re-analysis."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from cds_service.dicom.results import result_objects
from cds_service.dicom.stow import (
    instance_url,
    result_instance_uid,
    result_series_uid,
    store_results,
    stored_instance,
)
from cds_service.explain.heatmap import HipHeatmap
from cds_service.training.phantoms import write_sample_study
from tests.findings_factory import findings


def test_result_uids_are_deterministic_per_model_version_and_content():
    one = result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4", content="a")
    assert one == result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4", content="a")
    assert one != result_series_uid("1.2.3", "fracture@2+garden@1", "1.2.3.4", content="a")
    assert one != result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.5", content="a")
    assert one != result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4", kind="sc", content="a")
    assert one != result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4", content="b")
    assert result_instance_uid(one, "sr") != result_instance_uid(one, "sc")
    assert one.startswith("2.25.") and len(one) <= 64 and pydicom.uid.UID(one).is_valid
    rooted = result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4", root="1.3.6.1.4.1.99999")
    assert rooted.startswith("1.3.6.1.4.1.99999.") and len(rooted) == 64 and pydicom.uid.UID(rooted).is_valid
    assert pydicom.uid.UID(result_instance_uid(rooted, "sc")).is_valid and len(result_instance_uid(rooted, "sc")) <= 64


def test_a_stored_result_is_recognised_by_its_wado_rs_url():
    series = result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4", kind="sc")
    sop = result_instance_uid(series, "sc")
    url = instance_url("https://pacs.example.org/dicom-web/", "1.2.3", series, sop)
    assert url == f"https://pacs.example.org/dicom-web/studies/1.2.3/series/{series}/instances/{sop}"
    found = stored_instance(url)
    assert (found.base_url, found.study_instance_uid, found.series_instance_uid) == (
        "https://pacs.example.org/dicom-web",
        "1.2.3",
        series,
    )
    assert (found.kind, found.modality, found.sop_class_uid) == ("sc", "OT", pydicom.uid.SecondaryCaptureImageStorage)
    assert stored_instance(instance_url("https://pacs.example.org", "1.2.3", series, "1.2.3.9")) is None  # not ours
    assert stored_instance(result_instance_uid(series, "sc")) is None  # a bare UID is no URL


def _client(orthanc) -> DICOMwebClient:
    session = requests.Session()
    session.auth = orthanc.auth
    return DICOMwebClient(orthanc.dicomweb_url, session=session)


def _hips(source: pydicom.Dataset, right_heat: float = 1.0) -> list[HipHeatmap]:
    rows, cols = int(source.Rows), int(source.Columns)
    cam = np.full((8, 8), right_heat, np.float32)
    return [
        HipHeatmap("R", cam, False, (0, 0, cols // 2, rows)),
        HipHeatmap("L", cam * 0.3, True, (cols // 2, 0, cols, rows)),
    ]


def _results(source: pydicom.Dataset, right: float = 0.94) -> list[pydicom.Dataset]:
    """The SR and SC of one analysis, as the analyser makes them (UIDs derived from the content)."""
    return result_objects(source, findings(right=right), _hips(source, right), uid_root="")


def test_stow_into_the_source_study_then_read_back(orthanc_server, tmp_path: Path):
    # A study of its own: the session's Orthanc also holds results other tests stored for sample 7.
    path = write_sample_study(tmp_path, seed=17)
    source = pydicom.dcmread(path)
    orthanc_server.upload(path.read_bytes())
    client = _client(orthanc_server)
    results = _results(source)

    stored = store_results(orthanc_server.dicomweb_url, results, client)
    assert sorted(stored) == sorted(
        instance_url(orthanc_server.dicomweb_url, d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID)
        for d in results
    )
    for url in stored:  # each URL is a working WADO-RS instance retrieve
        accept = {"Accept": 'multipart/related; type="application/dicom"'}
        answer = httpx.get(url, headers=accept, auth=orthanc_server.auth, timeout=10)
        assert answer.status_code == 200 and stored_instance(url).sop_instance_uid.encode() in answer.content

    series = client.search_for_series(study_instance_uid=source.StudyInstanceUID)
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == ["CR", "OT", "SR"]  # the source series and one new series per result object
    sr_back = client.retrieve_instance(source.StudyInstanceUID, results[0].SeriesInstanceUID, results[0].SOPInstanceUID)
    assert sr_back.VerificationFlag == "UNVERIFIED"
    assert sr_back.PatientID == source.PatientID
    sc_back = client.retrieve_instance(source.StudyInstanceUID, results[1].SeriesInstanceUID, results[1].SOPInstanceUID)
    assert sc_back.BurnedInAnnotation == "YES"
    assert sc_back.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    # Re-analysis saying the same: same UIDs, Orthanc keeps one copy of each.
    again = store_results(orthanc_server.dicomweb_url, _results(source), client)
    assert sorted(again) == sorted(stored)
    instances = client.search_for_instances(study_instance_uid=source.StudyInstanceUID)
    uids = [i["00080018"]["Value"][0] for i in instances]
    stored_uids = [d.SOPInstanceUID for d in results]
    assert sorted(uids) == sorted([source.SOPInstanceUID, *stored_uids])
    for uid in stored_uids:  # Orthanc's own index: exactly one instance per SOP Instance UID
        found = httpx.post(
            f"{orthanc_server.base_url}/tools/lookup", content=uid, auth=orthanc_server.auth, timeout=10
        ).json()
        assert len(found) == 1

    # Re-analysis saying something else: new UIDs, stored beside the first result (not dropped).
    changed = _results(source, right=0.81)
    assert not {d.SOPInstanceUID for d in changed} & set(stored_uids)
    newer = store_results(orthanc_server.dicomweb_url, changed, client)
    assert not set(newer) & set(stored)
    sr_changed = client.retrieve_instance(
        source.StudyInstanceUID, changed[0].SeriesInstanceUID, changed[0].SOPInstanceUID
    )
    assert sr_changed.SOPInstanceUID == changed[0].SOPInstanceUID
    instances = client.search_for_instances(study_instance_uid=source.StudyInstanceUID)
    assert len(instances) == 5  # the source, the first SR and SC, the new SR and SC


def test_store_refuses_a_client_outside_the_allowed_base(orthanc_server):
    with pytest.raises(ValueError):
        store_results("http://elsewhere.example/dicom-web", [], _client(orthanc_server))
