"""Our own gRPC API (``proto/hipcad/v1/analysis.proto``), compiled on first use with grpcio-tools.

The generated modules go to ``cds_service/_proto/`` (not committed: the .proto file is the source).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
GENERATED = Path(__file__).resolve().parent / "_proto"


def compile_protos(out: Path = GENERATED) -> None:
    """Run protoc (grpcio-tools) on every .proto under ``proto/``."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")


def load() -> tuple[ModuleType, ModuleType]:
    """The ``analysis_pb2`` and ``analysis_pb2_grpc`` modules, compiling them when missing or stale."""
    proto = PROTO_ROOT / "hipcad" / "v1" / "analysis.proto"
    generated = GENERATED / "hipcad" / "v1" / "analysis_pb2.py"
    if not generated.exists() or generated.stat().st_mtime < proto.stat().st_mtime:
        compile_protos()
    if str(GENERATED) not in sys.path:
        sys.path.insert(0, str(GENERATED))
    return importlib.import_module("hipcad.v1.analysis_pb2"), importlib.import_module("hipcad.v1.analysis_pb2_grpc")


def servicer(pipeline: object) -> object:
    """A ``HipAnalysisService`` servicer answering from the hook pipeline's analysis (and its cache)."""
    import grpc

    from cds_service.errors import CdsServiceError
    from cds_service.fhir.imaging_study import StudyRef

    pb, pb_grpc = load()
    lateralities = {"R": pb.LATERALITY_RIGHT, "L": pb.LATERALITY_LEFT}

    class HipAnalysisService(pb_grpc.HipAnalysisServiceServicer):
        async def AnalyzeStudy(self, request, context):
            if not request.dicomweb_base or not request.study_instance_uid:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "dicomweb_base and study_instance_uid are required"
                )
            study = StudyRef(
                imaging_study_id=None,
                study_instance_uid=request.study_instance_uid,
                series_instance_uid=request.series_instance_uid or None,
                sop_instance_uid=request.sop_instance_uid or None,
                endpoint_address=request.dicomweb_base,
                started=None,
            )
            try:
                analysis = await pipeline.analysis_for(study, pipeline.settings.hook_deadline_s)  # type: ignore[attr-defined]
            except TimeoutError:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "analysis still running; retry shortly")
            except CdsServiceError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            findings = analysis.findings
            return pb.AnalyzeStudyResponse(
                hips=[
                    pb.HipResult(
                        laterality=lateralities.get(hip.laterality or "", pb.LATERALITY_UNSPECIFIED),
                        fracture_probability=hip.fracture_probability,
                        fractured=hip.fractured,
                        garden_probabilities=list(hip.garden_probabilities),
                        displaced_probability=hip.displaced_probability,
                    )
                    for hip in findings.hips
                ],
                heatmap_png=analysis.overlay_png,
                fracture_model=findings.fracture_model.label,
                garden_model=findings.garden_model.label,
                disclaimer=findings.disclaimer,
            )

    return HipAnalysisService()


async def start_server(pipeline: object, port: int, host: str = "127.0.0.1") -> object:
    """Start the grpc.aio server for :func:`servicer` on ``host:port``; returns it (call ``stop``)."""
    import grpc

    _, pb_grpc = load()
    server = grpc.aio.server()
    pb_grpc.add_HipAnalysisServiceServicer_to_server(servicer(pipeline), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
