"""hipcad.v1 AnalyzeStudy over real gRPC (on the real Triton), its JWT check, health, reflection, binding, stubs."""

import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pydicom
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from PIL import Image

import cds_service
from cds_service.app import create_app
from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.demo import free_port
from cds_service.grpc_api import (
    SERVICE_NAME,
    UNAUTHENTICATED_DETAILS,
    GeneratedCodeMissingError,
    audience,
    load,
)
from cds_service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(cds_service.__file__).resolve().parent


def bearer(private_pem: bytes, settings: Settings, aud: str | None = None) -> tuple[tuple[str, str]]:
    """Call metadata with a freshly signed JWT (one per call: the ``jti`` may not be replayed)."""
    return (
        ("authorization", f"Bearer {sign_request_jwt(private_pem, settings.jwt_issuer, aud or audience(settings))}"),
    )


@pytest.fixture
def grpc_service(service_settings: Settings) -> Iterator[tuple[Settings, grpc.Channel]]:
    """The app with its gRPC API on a free port (no Triton: enough for auth, health and reflection)."""
    settings = service_settings.model_copy(update={"grpc_port": free_port()})
    with TestClient(create_app(settings)), grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        yield settings, channel


def analyze(channel: grpc.Channel, metadata=None, **fields) -> object:
    pb, pb_grpc = load()
    return pb_grpc.HipAnalysisServiceStub(channel).AnalyzeStudy(
        pb.AnalyzeStudyRequest(**fields), metadata=metadata, timeout=30
    )


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_analyze_study_answers_both_hips_with_a_heat_map(service_settings, triton, dicom_store, ehr_keys):
    port = free_port()
    settings = service_settings.model_copy(update={"triton_url": triton.grpc_url, "grpc_port": port})
    ds = pydicom.dcmread(next(dicom_store.glob("*.dcm")), stop_before_pixels=True)
    pb, pb_grpc = load()
    with TestClient(create_app(settings)), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.HipAnalysisServiceStub(channel)
        answer = stub.AnalyzeStudy(
            pb.AnalyzeStudyRequest(dicomweb_base=dicom_store.as_uri(), study_instance_uid=ds.StudyInstanceUID),
            metadata=bearer(ehr_keys[0], settings),
            timeout=60,
        )
        assert [hip.laterality for hip in answer.hips] == [pb.LATERALITY_RIGHT, pb.LATERALITY_LEFT]
        assert all(len(hip.garden_probabilities) == 4 for hip in answer.hips)
        assert Image.open(io.BytesIO(answer.heatmap_png)).format == "PNG"
        assert answer.fracture_model.startswith("fracture@")

        try:
            stub.AnalyzeStudy(
                pb.AnalyzeStudyRequest(dicomweb_base="http://evil.example/dicom-web", study_instance_uid="1.2.3"),
                metadata=bearer(ehr_keys[0], settings),
                timeout=30,
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "allow-list" in exc.details()
        else:
            raise AssertionError("a non-allow-listed DICOMweb base must be refused")


# Authentication -----------------------------------------------------------------------------------


def test_a_call_without_a_token_is_unauthenticated(grpc_service, caplog):
    _, channel = grpc_service
    with caplog.at_level(logging.WARNING, logger="cds_service.grpc_api"):
        error = rpc_error(lambda: analyze(channel, dicomweb_base="file:///x", study_instance_uid="1.2.3"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == UNAUTHENTICATED_DETAILS
    assert any("UNAUTHENTICATED" in record.getMessage() for record in caplog.records)


def test_a_token_signed_by_another_key_is_unauthenticated(grpc_service, caplog):
    settings, channel = grpc_service
    stranger = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    metadata = bearer(stranger, settings)
    with caplog.at_level(logging.WARNING, logger="cds_service.grpc_api"):
        error = rpc_error(lambda: analyze(channel, metadata, dicomweb_base="file:///x", study_instance_uid="1"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == UNAUTHENTICATED_DETAILS
    token = metadata[0][1].removeprefix("Bearer ")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "UNAUTHENTICATED" in logged
    assert token not in logged and token.split(".")[2] not in logged  # the reason is logged, never the token


@pytest.mark.parametrize(
    "path",
    [
        "",  # the bare service URL
        "/cds-services/hipcad-hip-fracture",  # an HTTP endpoint's audience
        "/hipcad.v1.HipAnalysisService/Other",  # another method
    ],
)
def test_a_token_for_another_audience_is_unauthenticated(grpc_service, ehr_keys, path):
    settings, channel = grpc_service
    metadata = bearer(ehr_keys[0], settings, aud=settings.base_url() + path)
    error = rpc_error(lambda: analyze(channel, metadata, dicomweb_base="file:///x", study_instance_uid="1"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("value", ["", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt"])
def test_a_malformed_authorization_is_unauthenticated(grpc_service, value):
    _, channel = grpc_service
    error = rpc_error(lambda: analyze(channel, (("authorization", value),), study_instance_uid="1"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_authenticated_call_reaches_the_service_and_a_replayed_token_does_not(grpc_service, ehr_keys):
    settings, channel = grpc_service
    assert audience(settings) == settings.base_url() + "/hipcad.v1.HipAnalysisService/AnalyzeStudy"
    metadata = bearer(ehr_keys[0], settings)
    # Authenticated: the servicer itself answers (an empty request is invalid; no Triton needed).
    error = rpc_error(lambda: analyze(channel, metadata))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same token again: its jti was seen.
    error = rpc_error(lambda: analyze(channel, metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_unknown_method_is_unauthenticated_without_a_token(grpc_service):
    _, channel = grpc_service
    call = channel.unary_unary("/hipcad.v1.HipAnalysisService/Secret")
    error = rpc_error(lambda: call(b"", timeout=10))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# Health and reflection (no JWT) ------------------------------------------------------------------------


def test_health_answers_serving_without_a_token(grpc_service):
    _, channel = grpc_service
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    error = rpc_error(lambda: stub.Check(health_pb2.HealthCheckRequest(service="nope.v1.Nothing"), timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_service_without_a_token(grpc_service):
    _, channel = grpc_service
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
    from google.protobuf.descriptor_pool import DescriptorPool

    service = DescriptorPool(database).FindServiceByName(SERVICE_NAME)
    assert [method.name for method in service.methods] == ["AnalyzeStudy"]
    assert service.file.name == "hipcad/v1/analysis.proto"


# Binding --------------------------------------------------------------------------------------------


def listening_addresses(port: int) -> list[str]:
    """The local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.append(address)
    return found


def test_the_server_binds_loopback_by_default(grpc_service):
    settings, _ = grpc_service
    assert Settings.model_fields["grpc_host"].default == "127.0.0.1"
    assert settings.grpc_host == "127.0.0.1"
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    addresses = listening_addresses(settings.grpc_port)
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    assert addresses, "the gRPC server is not listening"
    assert set(addresses) <= loopback, f"listening beyond loopback: {addresses}"


# Generated stubs: built at install time, only imported at run time ----------------------------------


def test_the_stubs_live_in_the_package_and_import_without_touching_sys_path():
    pb, pb_grpc = load()
    assert pb.__name__ == "cds_service._proto.hipcad.v1.analysis_pb2"
    assert pb_grpc.__name__ == "cds_service._proto.hipcad.v1.analysis_pb2_grpc"
    assert "hipcad" not in sys.modules  # no top-level module from generated code
    assert type(pb.AnalyzeStudyRequest()).__module__ == pb.__name__
    message = pb.AnalyzeStudyResponse(
        hips=[pb.HipResult(laterality=pb.LATERALITY_LEFT, garden_probabilities=[0.25] * 4)]
    )
    assert pb.AnalyzeStudyResponse.FromString(message.SerializeToString()) == message


NEVER_WRITES = r"""
import asyncio, json, os, sys

writes = []

def audit(event, args):
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1] or "", args[2] or 0
        if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(f"open {args[0]}")
    elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.copyfile", "shutil.move", "os.chmod"):
        writes.append(f"{event} {args[0]}")

sys.addaudithook(audit)

from cds_service import grpc_api
from cds_service.cdshooks.jwt import JwtVerifier
from cds_service.settings import Settings

grpc_api.load()
grpc_api.servicer(object())

async def main():
    settings = Settings(grpc_port=int(sys.argv[1]))
    server = await grpc_api.start_server(object(), settings.grpc_port, settings.grpc_host, JwtVerifier([]), settings)
    await server.stop(None)

asyncio.run(main())
print(json.dumps({"writes": writes, "protoc": "grpc_tools.protoc" in sys.modules}))
"""


def package_snapshot() -> tuple[set[str], dict[str, tuple[int, int]]]:
    """Every file under the package (no bytecode), and the generated stubs' mtimes and sizes."""
    files = {
        str(path.relative_to(PACKAGE_DIR))
        for path in PACKAGE_DIR.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    stubs = {
        str(path): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in (PACKAGE_DIR / "_proto").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    return files, stubs


def test_importing_loading_and_serving_writes_no_file():
    before = package_snapshot()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", NEVER_WRITES, str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"writes": [], "protoc": False}
    assert package_snapshot() == before


def test_missing_stubs_are_a_clear_error_not_a_compile(monkeypatch):
    before = package_snapshot()
    for name in [name for name in sys.modules if name.startswith("cds_service._proto")] + ["cds_service._proto"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if the build step never ran
    with pytest.raises(GeneratedCodeMissingError, match=r"reinstall.*pip install"):
        load()
    assert package_snapshot() == before


def test_setup_py_generates_an_importable_package(tmp_path):
    pytest.importorskip("grpc_tools.protoc")
    spec = importlib.util.spec_from_file_location("hipcad_setup", REPO_ROOT / "setup.py")
    setup_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_py)  # not __main__: defines the build step without running setup()
    out = tmp_path / "cds_service" / "_proto"
    written = setup_py.generate(out)
    names = sorted(str(path.relative_to(out)) for path in written)
    assert names == [
        "__init__.py",
        "hipcad/__init__.py",
        "hipcad/v1/__init__.py",
        "hipcad/v1/analysis_pb2.py",
        "hipcad/v1/analysis_pb2.pyi",
        "hipcad/v1/analysis_pb2_grpc.py",
    ]
    grpc_module = (out / "hipcad" / "v1" / "analysis_pb2_grpc.py").read_text()
    assert "from cds_service._proto.hipcad.v1 import analysis_pb2" in grpc_module
    pb2 = (out / "hipcad" / "v1" / "analysis_pb2.py").read_text()
    assert "'cds_service._proto.hipcad.v1.analysis_pb2'" in pb2
    assert "ValidateProtobufRuntimeVersion" in pb2  # protoc's own check stays: the build pins a matching protoc
    for path in written:
        assert "from hipcad" not in path.read_text()
        if path.suffix == ".py":
            compile(path.read_text(), str(path), "exec")
