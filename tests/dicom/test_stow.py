"""STOW-RS of the SR and SC into the source study on a real Orthanc; idempotent re-analysis."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from cds_service.dicom.sc import build_heatmap_sc
from cds_service.dicom.sr import build_measurement_report, model_labels
from cds_service.dicom.stow import (
    instance_url,
    result_instance_uid,
    result_series_uid,
    store_results,
    stored_instance,
)
from cds_service.training.phantoms import write_sample_study
from tests.findings_factory import findings


def test_result_uids_are_deterministic_per_model_version():
    one = result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4")
    assert one == result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4")
    assert one != result_series_uid("1.2.3", "fracture@2+garden@1", "1.2.3.4")
    assert one != result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.5")
    assert one != result_series_uid("1.2.3", "fracture@1+garden@1", "1.2.3.4", kind="sc")
    assert result_instance_uid(one, "sr") != result_instance_uid(one, "sc")
    assert len(one) <= 64 and pydicom.uid.UID(one).is_valid


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


def _results(source: pydicom.Dataset) -> list[pydicom.Dataset]:
    result = findings()
    sr_series, sc_series = (
        result_series_uid(source.StudyInstanceUID, model_labels(result), source.SOPInstanceUID, kind)
        for kind in ("sr", "sc")
    )
    sr = build_measurement_report(
        source, result, series_instance_uid=sr_series, sop_instance_uid=result_instance_uid(sr_series, "sr")
    )
    rgb = np.repeat(source.pixel_array[::8, ::8, None].astype(np.uint8), 3, axis=2)
    sc = build_heatmap_sc(
        source,
        rgb,
        series_instance_uid=sc_series,
        sop_instance_uid=result_instance_uid(sc_series, "sc"),
        findings=result,
    )
    return [sr, sc]


def test_stow_into_the_source_study_then_read_back(orthanc_server, tmp_path: Path):
    path = write_sample_study(tmp_path, seed=7)
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

    # Re-analysis with the same models: same UIDs, Orthanc keeps one copy of each.
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


def test_store_refuses_a_client_outside_the_allowed_base(orthanc_server):
    with pytest.raises(ValueError):
        store_results("http://elsewhere.example/dicom-web", [], _client(orthanc_server))
