"""Steps for results_in_pacs.feature: real DICOM association, real Orthanc, real Triton."""

from __future__ import annotations

import time

import highdicom as hd
import pydicom
from pytest_bdd import given, scenarios, then, when

from cds_service.demo import free_port
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.training.phantoms import write_sample_study
from tests.dicom.test_listener import c_store
from tests.test_end_to_end import post
from tests.test_results_in_pacs import _orthanc_client, _results

scenarios("results_in_pacs.feature")


@given(
    "a hip radiograph routed to the service's DICOM node, which stores results in the PACS",
    target_fixture="routed",
)
def _routed(make_service, orthanc_server, tmp_path):
    path = write_sample_study(tmp_path, seed=7)  # the demo's phantom: a displaced right femoral-neck fracture
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()  # a new study for this scenario
    ds.SeriesInstanceUID, ds.SOPInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path)
    orthanc_server.upload(path.read_bytes())  # the archive holds the images …
    port = free_port()
    service = make_service(
        dicom_listener_port=port,
        dicomweb_allowed_bases=[orthanc_server.dicomweb_url],
        dicomweb_credentials={
            orthanc_server.dicomweb_url: {"username": orthanc_server.user, "password": orthanc_server.password}
        },
        dicom_listener_source=orthanc_server.dicomweb_url,
        store_results=True,
    )
    assert c_store(port, ds) == 0x0000  # … and routes them to the service
    deadline = time.monotonic() + 60
    while not service.app.state.pipeline.store.local_keys() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.app.state.pipeline.store.local_keys(), "not analysed on arrival"
    return service, ds


@when("the ordering physician's EHR sends an order-select hook for that study", target_fixture="answer")
def _hook(routed, orthanc_server, ehr_keys, spans):
    service, ds = routed
    template = load_example("order-select.json")
    bundle = imaging_study_bundle(ds, template["context"]["patientId"], orthanc_server.dicomweb_url)
    spans.clear()
    return post(service, ehr_keys[0], with_studies(template, bundle)), spans


@then("the card comes from the result already analysed on arrival and says it is also in the PACS")
def _card(answer):
    response, spans = answer
    assert response.status_code == 200, response.text
    names = {span.name for span in spans.get_finished_spans()}
    assert "cache_hit" in names and "infer" not in names and "fetch" not in names
    assert "also in the PACS" in response.json()["cards"][0]["detail"]


@then("the study in the PACS holds a structured report and a heat-map image in new series")
def _series(routed, orthanc_server):
    _, ds = routed
    series = _results(_orthanc_client(orthanc_server), str(ds.StudyInstanceUID))
    assert set(series) == {"CR", "SR", "OT"}


@then("the structured report is unverified, names both models and stages the displaced right femoral-neck fracture")
def _report(routed, orthanc_server):
    _, ds = routed
    client = _orthanc_client(orthanc_server)
    study = str(ds.StudyInstanceUID)
    (sr_series,) = _results(client, study)["SR"]
    uid = sr_series["0020000E"]["Value"][0]
    (instance,) = client.search_for_instances(study_instance_uid=study, series_instance_uid=uid)
    sr = client.retrieve_instance(study, uid, instance["00080018"]["Value"][0])
    assert sr.VerificationFlag == "UNVERIFIED"
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    text = str(sr)
    assert "fracture@" in text and "garden@" in text  # algorithm identification of both models
    # The site-aware model names the femoral neck and stages the displaced fracture (Garden III or IV,
    # displaced: yes) on the right hip only; the normal left hip gets no Garden stage.
    assert "Right hip" in text and "Left hip" in text and "neck of femur" in text
    assert text.count("Garden stage (AI, if femoral-neck fracture)") == 1
    assert "'Garden III'" in text or "'Garden IV'" in text
    assert report.SOPInstanceUID == sr.SOPInstanceUID
