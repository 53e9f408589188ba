"""hipcad.v1 AnalyzeStudy over real gRPC, on the real Triton."""

import io

import grpc
import pydicom
from fastapi.testclient import TestClient
from PIL import Image

from cds_service.app import create_app
from cds_service.demo import free_port
from cds_service.grpc_api import load


def test_analyze_study_answers_both_hips_with_a_heat_map(service_settings, triton, dicom_store):
    port = free_port()
    settings = service_settings.model_copy(update={"triton_url": triton.grpc_url, "grpc_port": port})
    ds = pydicom.dcmread(next(dicom_store.glob("*.dcm")), stop_before_pixels=True)
    pb, pb_grpc = load()
    with TestClient(create_app(settings)), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.HipAnalysisServiceStub(channel)
        answer = stub.AnalyzeStudy(
            pb.AnalyzeStudyRequest(dicomweb_base=dicom_store.as_uri(), study_instance_uid=ds.StudyInstanceUID),
            timeout=60,
        )
        assert [hip.laterality for hip in answer.hips] == [pb.LATERALITY_RIGHT, pb.LATERALITY_LEFT]
        assert all(len(hip.garden_probabilities) == 4 for hip in answer.hips)
        assert Image.open(io.BytesIO(answer.heatmap_png)).format == "PNG"
        assert answer.fracture_model.startswith("fracture@")

        try:
            stub.AnalyzeStudy(
                pb.AnalyzeStudyRequest(dicomweb_base="http://evil.example/dicom-web", study_instance_uid="1.2.3"),
                timeout=30,
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "allow-list" in exc.details()
        else:
            raise AssertionError("a non-allow-listed DICOMweb base must be refused")
