"""Our own gRPC API (``proto/hipcad/v1/analysis.proto``): hipcad.v1 ``AnalyzeStudy`` for PACS and batch callers.

Generated code: the stubs (package ``cds_service._proto``, e.g. ``cds_service._proto.hipcad.v1.analysis_pb2``)
are generated from ``proto/`` by ``setup.py`` when the package is built or installed (``pip install .`` or
``pip install -e .``); they are not committed. This module only imports them and never writes a file: when
they are missing, :func:`load` says to reinstall the package.

Authentication: every ``hipcad.*`` RPC needs the metadata ``authorization: Bearer <JWT>``, verified exactly as
the HTTP service verifies CDS Hooks requests (:class:`~cds_service.cdshooks.jwt.JwtVerifier`: trusted issuer,
asymmetric signature, ``exp``/``iat``/``jti``, no replay, so one fresh token per call). The ``aud`` claim
must be the service's base URL followed by the full gRPC method path::

    aud = settings.base_url() + "/hipcad.v1.HipAnalysisService/AnalyzeStudy"
    e.g. "http://127.0.0.1:8080/hipcad.v1.HipAnalysisService/AnalyzeStudy"

A missing or invalid token is answered ``UNAUTHENTICATED`` ("missing or invalid bearer token"); the reason is
logged, never the token. Any method not explicitly public is protected, including unknown ones.

Public (no JWT): the standard health service ``grpc.health.v1.Health`` (SERVING for ``""`` and
``hipcad.v1.HipAnalysisService``), for load-balancer and Kubernetes probes, which cannot sign tokens; and
server reflection, for tooling such as ``grpcurl``. Both reveal only what the public .proto files already say.

Binding: ``settings.grpc_host`` (``HIPCAD_GRPC_HOST``, loopback by default), port ``settings.grpc_port``;
plaintext HTTP/2, so anything beyond loopback belongs behind a TLS-terminating proxy or mesh.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from contextvars import ContextVar
from types import ModuleType
from typing import TYPE_CHECKING, Any

import grpc

from cds_service.errors import AuthenticationError

if TYPE_CHECKING:
    from cds_service.cdshooks.jwt import JwtVerifier
    from cds_service.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = "hipcad.v1.HipAnalysisService"
#: Method-path prefixes answered without a JWT (health probes and reflection tooling).
PUBLIC_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
#: Largest accepted request message (AnalyzeStudy requests are a few UIDs and a URL).
MAX_REQUEST_BYTES = 1024 * 1024
UNAUTHENTICATED_DETAILS = "missing or invalid bearer token"
#: The verified JWT claims of the call being handled (set by :class:`JwtAuthInterceptor` around the method).
CALLER_CLAIMS: ContextVar[dict[str, Any] | None] = ContextVar("hipcad_grpc_caller_claims", default=None)


class GeneratedCodeMissingError(RuntimeError):
    """The gRPC stubs were not generated: the package was not installed with its build step."""


def load() -> tuple[ModuleType, ModuleType]:
    """The generated ``analysis_pb2`` and ``analysis_pb2_grpc`` modules (import only; never compiles)."""
    try:
        from cds_service._proto.hipcad.v1 import analysis_pb2, analysis_pb2_grpc
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("cds_service._proto"):
            raise
        raise GeneratedCodeMissingError(
            "the gRPC stubs (cds_service._proto) are missing: they are generated from proto/ when the package is "
            "built; reinstall it (`pip install -e .` in a checkout, or `pip install .`)"
        ) from exc
    return analysis_pb2, analysis_pb2_grpc


def audience(settings: Settings, method: str = f"/{SERVICE_NAME}/AnalyzeStudy") -> str:
    """The JWT ``aud`` a caller must use for ``method`` (the full gRPC method path)."""
    return settings.base_url() + method


class JwtAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires a valid CDS Hooks-style bearer JWT on every RPC except the public ones (health, reflection)."""

    def __init__(self, verifier: JwtVerifier, base_url: str) -> None:
        self.verifier = verifier
        self.base_url = base_url.rstrip("/")

    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        if method.startswith(PUBLIC_METHOD_PREFIXES):
            return await continuation(handler_call_details)
        authorization = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else None
                break
        try:
            claims = await self.verifier.verify(authorization, self.base_url + method)
        except AuthenticationError as exc:
            log.warning("gRPC %s UNAUTHENTICATED: %s", method, exc)
            return _deny(await continuation(handler_call_details))
        return _with_claims(await continuation(handler_call_details), claims)


def caller(claims: dict[str, Any]) -> str:
    """Who is asking, for the result cache key: the JWT issuer, and its tenant when there is one."""
    tenant = claims.get("tenant")
    return f"{claims['iss']}|{tenant}" if tenant else str(claims["iss"])


def _with_claims(handler: grpc.RpcMethodHandler | None, claims: dict[str, Any]) -> grpc.RpcMethodHandler | None:
    """``handler`` with its unary method run while :data:`CALLER_CLAIMS` holds ``claims``."""
    behavior = getattr(handler, "unary_unary", None)
    if behavior is None:  # unknown method (UNIMPLEMENTED) or a streaming one (none in hipcad.v1)
        return handler

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = CALLER_CLAIMS.set(claims)
        try:
            answer = behavior(request, context)
            return await answer if inspect.isawaitable(answer) else answer
        finally:
            CALLER_CLAIMS.reset(token)

    return handler._replace(unary_unary=unary_unary)  # type: ignore[union-attr]


def _deny(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED (without running the method)."""

    async def abort(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS)

    options = {
        "request_deserializer": getattr(handler, "request_deserializer", None),
        "response_serializer": getattr(handler, "response_serializer", None),
    }
    streams = (getattr(handler, "request_streaming", False), getattr(handler, "response_streaming", False))
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[streams]
    return factory(abort, **options)


def servicer(pipeline: object) -> object:
    """A ``HipAnalysisService`` servicer answering from the hook pipeline's analysis (and its cache)."""
    from cds_service.errors import CdsServiceError
    from cds_service.explain.heatmap import render_overlay_png
    from cds_service.fhir.imaging_study import StudyRef

    pb, pb_grpc = load()
    lateralities = {"R": pb.LATERALITY_RIGHT, "L": pb.LATERALITY_LEFT}

    class HipAnalysisService(pb_grpc.HipAnalysisServiceServicer):
        async def AnalyzeStudy(self, request, context):
            claims = CALLER_CLAIMS.get()
            if claims is None:  # served without JwtAuthInterceptor: refuse rather than answer anyone
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS)
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
            loop = asyncio.get_running_loop()
            deadline = loop.time() + pipeline.settings.hook_deadline_s  # type: ignore[attr-defined]
            try:
                # No patient in a gRPC request: the key's patient is empty, so hook results are not shared.
                # The deadline covers reading the model versions for the key (Triton may be down).
                async with asyncio.timeout_at(deadline):
                    key = await pipeline.scheduler.result_key(study, "", caller(claims))  # type: ignore[attr-defined]
                if key is None:
                    await context.abort(
                        grpc.StatusCode.FAILED_PRECONDITION, "the DICOMweb base is not on the service's allow-list"
                    )
                analysis = await pipeline.scheduler.analysis_for(  # type: ignore[attr-defined]
                    study, key, max(0.0, deadline - loop.time())
                )
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
                heatmap_png=render_overlay_png(
                    analysis.display, analysis.heatmaps, analysis.image_shape, heat=analysis.heat
                ),
                fracture_model=findings.fracture_model.label,
                garden_model=findings.garden_model.label,
                disclaimer=findings.disclaimer,
            )

    return HipAnalysisService()


async def start_server(
    pipeline: object, port: int, host: str, verifier: JwtVerifier, settings: Settings
) -> grpc.aio.Server:
    """Start the grpc.aio server on ``host:port``: AnalyzeStudy (JWT required), health and reflection.

    Returns the started server (call ``stop``). ``host`` is normally ``settings.grpc_host``; the JWT audience
    is ``settings.base_url()`` + the method path.
    """
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    pb, pb_grpc = load()
    server = grpc.aio.server(
        interceptors=[JwtAuthInterceptor(verifier, settings.base_url())],
        options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES)],
    )
    pb_grpc.add_HipAnalysisServiceServicer_to_server(servicer(pipeline), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    reflection.enable_server_reflection(
        (
            pb.DESCRIPTOR.services_by_name["HipAnalysisService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"gRPC API cannot listen on {host}:{port}")
    await server.start()
    log.info("gRPC API (hipcad.v1, health, reflection) listening on %s:%d", host, bound)
    return server
