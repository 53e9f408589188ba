"""FastAPI application factory: routes, authentication and error mapping only; no business logic."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from cds_service import __version__
from cds_service.cdshooks.discovery import load_services
from cds_service.cdshooks.jwt import TrustedIssuer, verify_request_jwt
from cds_service.cdshooks.models import HookRequest, to_json
from cds_service.errors import AuthenticationError, BadRequestError, PrefetchUnavailableError
from cds_service.pipeline import AnalysisPipeline
from cds_service.settings import Settings, get_settings
from cds_service.telemetry import setup_tracing

log = logging.getLogger(__name__)


def operation_outcome(status: int, code: str, diagnostics: str) -> JSONResponse:
    """A FHIR OperationOutcome error body (CDS Hooks recommends one for 4xx answers)."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return JSONResponse(body, status_code=status, media_type="application/fhir+json")


def create_app(settings: Settings | None = None, pipeline: AnalysisPipeline | None = None) -> FastAPI:
    """Build the ASGI app; ``pipeline`` may be injected (tests), else it is built from settings."""
    settings = settings or get_settings()
    setup_tracing(console=settings.otel_console)
    services = load_services()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pipeline = pipeline or AnalysisPipeline.from_settings(settings)
        grpc_server = None
        if settings.grpc_port:
            from cds_service.grpc_api import start_server

            grpc_server = await start_server(app.state.pipeline, settings.grpc_port, settings.host)
        yield
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await app.state.pipeline.close()

    app = FastAPI(title="hipcad CDS service", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)

    def issuers() -> list[TrustedIssuer]:
        return [TrustedIssuer(settings.jwt_issuer, settings.jwt_public_key_file.read_bytes())]

    def authenticate(request: Request) -> None:
        if not settings.jwt_required:
            return
        audience = settings.base_url() + request.url.path
        verify_request_jwt(request.headers.get("authorization"), audience, issuers(), settings.jwt_leeway_s)

    @app.exception_handler(AuthenticationError)
    async def _unauthorised(_: Request, exc: AuthenticationError) -> Response:
        log.warning("401: %s", exc)
        return Response(status_code=401)

    @app.exception_handler(BadRequestError)
    async def _bad_request(_: Request, exc: BadRequestError) -> Response:
        log.info("400: %s", exc)
        return operation_outcome(400, "invalid", str(exc))

    @app.exception_handler(PrefetchUnavailableError)
    async def _precondition(_: Request, exc: PrefetchUnavailableError) -> Response:
        log.info("412: %s", exc)
        return operation_outcome(412, "not-found", str(exc))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/cds-services")
    async def discovery(request: Request) -> dict:
        authenticate(request)
        return {"services": [to_json(service) for service in services.values()]}

    @app.post("/cds-services/{service_id}")
    async def hook(service_id: str, request: Request) -> dict:
        authenticate(request)
        service = services.get(service_id)
        if service is None:
            return operation_outcome(404, "not-found", "unknown CDS service id")  # type: ignore[return-value]
        body = await request.body()
        if len(body) > settings.max_request_bytes:
            raise BadRequestError(f"request body larger than {settings.max_request_bytes} bytes")
        try:
            hook_request = HookRequest.model_validate(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequestError("request body is not valid JSON") from exc
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors())
            raise BadRequestError(f"invalid hook request: {fields}") from exc
        if hook_request.hook != service.hook:
            raise BadRequestError(
                f"service {service_id!r} answers the {service.hook!r} hook, not {hook_request.hook!r}"
            )
        outcome = await request.app.state.pipeline.handle(hook_request)
        return to_json(outcome.response)

    return app
