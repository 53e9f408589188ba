"""Analysis on arrival through the archive: a real Orthanc forwards a stable hip study to the
service's DICOM listener with the Lua script the README gives, and the next order hook is answered
from the result store (issue #11).

The Lua script is read from README.md, so the recipe an integration engineer copies is the one tested.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pydicom
import pytest

from cds_service.demo import free_port
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.training.phantoms import write_sample_study
from tests.conftest import require
from tests.dicom.test_listener import triton_inferences
from tests.servers.orthanc import OrthancServer
from tests.test_end_to_end import post

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_lua() -> str:
    (script,) = re.findall(r"```lua\n(.*?)```", README.read_text(), re.S)
    return script


@pytest.fixture
def routing_archive(tmp_path: Path) -> tuple[OrthancServer, int]:
    """An Orthanc whose Lua ``OnStableStudy`` (README) stores CR/DX series to modality ``hipcad``."""
    require(OrthancServer.installed(), "Orthanc is not installed (run .ci/install-tools.sh)")
    listener = free_port()
    lua = tmp_path / "route.lua"
    lua.write_text(readme_lua())
    orthanc = OrthancServer(
        tmp_path / "orthanc",
        extra_config={
            "DicomServerEnabled": True,
            "DicomPort": free_port(),
            "DicomAet": "ARCHIVE",
            "DicomModalities": {"hipcad": ["HIPCAD", "127.0.0.1", listener]},
            "LuaScripts": [str(lua)],
            "StableAge": 1,  # seconds without a new instance before a study is "stable"
        },
    ).start()
    yield orthanc, listener
    orthanc.stop()


def test_a_stable_hip_study_in_orthanc_is_analysed_before_the_order_hook(
    make_service, triton, ehr_keys, routing_archive, tmp_path, spans
):
    orthanc, listener = routing_archive
    service = make_service(
        dicom_listener_port=listener,
        dicom_listener_calling_ae_titles=["ARCHIVE"],
        dicom_listener_source=orthanc.dicomweb_url,
        dicomweb_allowed_bases=[orthanc.dicomweb_url],
        dicomweb_credentials={orthanc.dicomweb_url: {"username": orthanc.user, "password": orthanc.password}},
    )
    study = pydicom.dcmread(write_sample_study(tmp_path / "modality", seed=41))
    before = triton_inferences(triton)
    orthanc.upload((tmp_path / "modality" / "sample-41.dcm").read_bytes())  # the modality sends to the archive

    store = service.app.state.pipeline.store
    deadline = time.monotonic() + 60
    while not any(k.sop_instance_uid == study.SOPInstanceUID for k in store.local_keys()):
        assert time.monotonic() < deadline, "Orthanc did not route the study, or the listener did not analyse it"
        time.sleep(0.2)
    analysed = triton_inferences(triton)
    assert analysed > before  # the arrival ran the models, before any hook

    template = load_example("order-select.json")
    bundle = imaging_study_bundle(study, template["context"]["patientId"], orthanc.dicomweb_url)
    spans.clear()
    answer = post(service, ehr_keys[0], with_studies(template, bundle))
    assert answer.status_code == 200, answer.text
    (card,) = answer.json()["cards"]
    assert card["suggestions"], card  # a finding with its DiagnosticReport, not "analysis in progress"
    names = {span.name for span in spans.get_finished_spans()}
    assert "cache_hit" in names and "infer" not in names and "fetch" not in names
    assert triton_inferences(triton) == analysed
