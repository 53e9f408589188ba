"""Analysis on arrival (issue #11): a real DICOM association (pynetdicom SCU) to the service's Storage SCP,
then the order hook for that study is answered from the result store: Triton is not called again."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from cds_service.demo import free_port
from cds_service.dicom.listener import ACCEPTED_SOP_CLASSES, refusal
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.training.phantoms import write_sample_study
from tests.factory import radiograph, ramp
from tests.test_end_to_end import post


def triton_inferences(triton) -> int:
    """Successful inference requests Triton has served, summed over models (its Prometheus metrics)."""
    text = httpx.get(f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=10).text
    return sum(int(float(v)) for v in re.findall(r"^nv_inference_request_success\{[^}]*\} (\S+)$", text, re.M))


def c_store(port: int, ds: pydicom.Dataset, calling: str = "PACS") -> int:
    ae = AE(ae_title=calling)
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_requested_context(sop_class, ds.file_meta.TransferSyntaxUID)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="HIPCAD")
    assert assoc.is_established, "association refused"
    try:
        assert assoc.send_c_echo().Status == 0x0000
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


@pytest.fixture
def routed_study(tmp_path: Path) -> pydicom.Dataset:
    """A new phantom study (not yet in any store) as a modality would send it."""
    return pydicom.dcmread(write_sample_study(tmp_path / "modality", seed=23))


def test_an_image_routed_to_the_listener_makes_the_next_hook_a_cache_hit(
    make_service, triton, ehr_keys, dicom_store, routed_study, spans
):
    port = free_port()
    service = make_service(dicom_listener_port=port, card_link="absolute")  # the test opens the viewer link
    before = triton_inferences(triton)
    assert c_store(port, routed_study) == 0x0000

    deadline = time.monotonic() + 60
    while not service.app.state.pipeline.store.local_keys() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.app.state.pipeline.store.local_keys(), "the arrived image was not analysed"
    analysed = triton_inferences(triton)
    assert analysed > before  # the arrival itself ran the models

    template = load_example("order-select.json")
    bundle = imaging_study_bundle(routed_study, template["context"]["patientId"], dicom_store.as_uri())
    spans.clear()
    answer = post(service, ehr_keys[0], with_studies(template, bundle))
    assert answer.status_code == 200 and answer.json()["cards"][0]["suggestions"], answer.text
    names = {span.name for span in spans.get_finished_spans()}
    assert "cache_hit" in names and "infer" not in names
    assert triton_inferences(triton) == analysed  # answered from the store: Triton not called again
    # The viewer link points at the result filed on arrival (read back from the database, not memory).
    (link,) = [link for link in answer.json()["cards"][0]["links"] if link["type"] == "absolute"]
    service.app.state.pipeline.store.local_entries = 0
    service.app.state.pipeline.store._local.clear()
    viewer = service.get(httpx.URL(link["url"]).path)
    assert viewer.status_code == 200 and "heat map" in viewer.text.lower(), viewer.status_code


def test_a_calling_ae_title_not_configured_is_refused(make_service, routed_study):
    port = free_port()
    make_service(dicom_listener_port=port, dicom_listener_calling_ae_titles=["PACS"])
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="HIPCAD")
    assert not assoc.is_established


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"Modality": "CT"}, "modality CT"),
        ({"BodyPartExamined": "CHEST"}, "body part"),
        ({"ViewPosition": "LL"}, "not a frontal view"),
        ({"Rows": 32}, "size"),
    ],
)
def test_only_frontal_pelvis_radiographs_are_analysed(changes, reason):
    ds = radiograph(ramp(), ViewPosition="AP")
    for name, value in changes.items():
        setattr(ds, name, value)
    found = refusal(ds, 60_000_000)
    assert found is None if reason is None else reason in found
