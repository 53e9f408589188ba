"""FastAPI application factory: routes, authentication, CORS and error mapping only; no business logic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_service import __version__
from cds_service.cdshooks.cards import unavailable_card
from cds_service.cdshooks.discovery import load_services
from cds_service.cdshooks.feedback import FeedbackRatesCollector, FeedbackStore, parse_feedback
from cds_service.cdshooks.jwt import SANDBOX_ISSUER, SANDBOX_JWKS, JwksCache, JwtVerifier, TrustedIssuer
from cds_service.cdshooks.models import CdsResponse, to_json
from cds_service.cdshooks.profiles import audiences
from cds_service.cdshooks.requests import parse_hook_request
from cds_service.dicom.listener import StorageListener
from cds_service.errors import (
    ISSUE_CODES,
    AuthenticationError,
    BadRequestError,
    PayloadTooLargeError,
    PrefetchUnavailableError,
    log_unexpected,
    operation_outcome_json,
)
from cds_service.http_limits import CLIENT_GONE, RequestTimeoutError, UnsupportedMediaTypeError
from cds_service.http_limits import read_body as read_limited_body
from cds_service.metrics import STORE_ERRORS, exposition_async, serve_cached, start_metrics_server
from cds_service.pipeline import AnalysisPipeline
from cds_service.probes import DependencyMonitor, Probes
from cds_service.settings import Settings, get_settings
from cds_service.smart import build_router as build_smart_router
from cds_service.store import AsyncStore, open_store
from cds_service.telemetry import is_probe, setup_tracing
from cds_service.viewer import build_router, viewer_link
from cds_service.viewer.routes import viewer_secret

log = logging.getLogger(__name__)


def operation_outcome(status: int, code: str, diagnostics: str) -> JSONResponse:
    """A FHIR OperationOutcome error body (CDS Hooks recommends one for 4xx answers)."""
    return JSONResponse(
        operation_outcome_json(status, diagnostics, code), status_code=status, media_type="application/fhir+json"
    )


def trusted_issuers(settings: Settings) -> list[TrustedIssuer]:
    """The configured issuers: the default one (PEM file), HIPCAD_JWT_ISSUERS, and the sandbox if switched on."""
    issuers = []
    if settings.jwt_public_key_file.exists():
        issuers.append(TrustedIssuer(settings.jwt_issuer, public_key_pem=settings.jwt_public_key_file.read_bytes()))
    for item in settings.jwt_issuers:
        issuers.append(
            TrustedIssuer(
                item.iss,
                public_key_pem=item.public_key_file.read_bytes() if item.public_key_file else None,
                jwks_url=item.jwks_url,
                jku_allowed=tuple(item.jku_allowed),
                tenants=tuple(item.tenants) if item.tenants is not None else None,
            )
        )
    if settings.dev_trust_cds_hooks_sandbox:
        log.warning(
            "DEVELOPMENT SWITCH ON: trusting the public CDS Hooks sandbox issuer, whose private key is public. "
            "Anyone can sign requests this service accepts. Never enable this in production."
        )
        # The sandbox's published public key is built in (no internet needed); its JWKS is the fallback.
        from cds_service.cdshooks.jwt import SANDBOX_PUBLIC_JWK

        issuers.append(
            TrustedIssuer(
                SANDBOX_ISSUER,
                jwks_url=SANDBOX_JWKS,
                jku_allowed=(SANDBOX_JWKS,),
                builtin_jwks=(SANDBOX_PUBLIC_JWK,),
            )
        )
    return issuers


def start_listener(settings: Settings, pipeline: AnalysisPipeline) -> StorageListener:
    """The DICOM Storage SCP, handing each accepted image to ``pipeline.arrived`` on this event loop."""
    loop = asyncio.get_running_loop()
    listener = StorageListener(
        lambda ds: asyncio.run_coroutine_threadsafe(pipeline.arrived(ds), loop),
        ae_title=settings.dicom_listener_ae_title,
        host=settings.dicom_listener_host,
        port=settings.dicom_listener_port,
        calling_ae_titles=settings.dicom_listener_calling_ae_titles,
        max_pixels=settings.max_image_pixels,
    )
    listener.start()
    return listener


def create_app(
    settings: Settings | None = None, pipeline: AnalysisPipeline | None = None, store: AsyncStore | None = None
) -> FastAPI:
    """Build the ASGI app; ``pipeline`` and ``store`` may be injected (tests), else built from settings.

    The store (SQLite, or PostgreSQL with ``HIPCAD_DATABASE_URL``) is migrated here, before the
    first request; a database URL without a viewer secret is refused at start-up.
    """
    settings = settings or get_settings()
    viewer_secret(settings)  # fail fast: replicas sharing a database must share the viewer key
    setup_tracing(console=settings.otel_console, otlp_endpoint=settings.otlp_endpoint)
    services = load_services()
    store = store or getattr(pipeline, "store", None) or open_store(settings)
    verifier = JwtVerifier(
        trusted_issuers(settings),
        leeway_s=settings.jwt_leeway_s,
        jwks=JwksCache(min_refresh_s=settings.jwks_refresh_s, max_age_s=settings.jwks_max_age_s),
        jti_strict=settings.jti_strict,
    )
    verifier.replays.remember = store.sql.remember_jti
    feedback = FeedbackStore(store.sql, viewer_secret(settings))  # finding cards recorded with their result
    rates = FeedbackRatesCollector()
    rates.store = feedback
    serve_cached("feedback_rates", rates)  # /metrics never waits for the database
    probes = Probes(max_loop_lag_s=settings.ready_max_loop_lag_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pipeline = pipeline or AnalysisPipeline.from_settings(settings, store)
        app.state.pipeline.viewer_link = partial(viewer_link, settings, store)
        grpc_server = None
        if settings.grpc_port:
            from cds_service.grpc_api import start_server

            grpc_server = await start_server(
                app.state.pipeline, settings.grpc_port, settings.grpc_host, verifier, settings
            )
        listener = start_listener(settings, app.state.pipeline) if settings.dicom_listener_port else None
        app.state.listener = listener
        stop_metrics = start_metrics_server(settings.host, settings.metrics_port) if settings.metrics_port else None
        checks = {"store": DependencyMonitor.in_thread(store.sql.ping, "store")}
        inference = getattr(app.state.pipeline, "inference", None)  # a pipeline stand-in may have none
        if inference is not None:
            checks["triton"] = inference.ready
        await probes.start(DependencyMonitor(checks, interval_s=settings.dependency_check_interval_s))
        yield
        await probes.stop()
        if stop_metrics is not None:
            stop_metrics()
        if listener is not None:
            listener.stop()
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await app.state.pipeline.close()

    app = FastAPI(
        title="hipcad CDS service",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own log records would carry exception messages; probes and /metrics are not traced
        telemetry={"logs": False, "exclude": is_probe},
    )
    app.state.feedback = feedback
    app.state.store = store
    app.state.probes = probes
    app.include_router(build_router(settings, store))
    app.include_router(build_smart_router(settings, store))
    if settings.cors_allow_origins:
        if "*" in settings.cors_allow_origins:
            log.warning("CORS allows any origin: acceptable for development only")
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            # Private Network Access: Chromium asks a public page (the hosted CDS Hooks sandbox) for
            # `Access-Control-Request-Private-Network` before it may call a service on localhost or the
            # hospital network; answered only with an allowed origin (a refused origin stays a 400).
            allow_private_network=True,
            max_age=600,
        )

    async def authenticate(request: Request) -> str:
        """Verify the JWT; the caller (``iss``, and ``|tenant`` when given) for result keys, "" when not required."""
        if not settings.jwt_required:
            return ""
        audience = audiences(settings, request.url.path)  # the URL invoked (and what the EHR profile accepts)
        try:
            claims = await verifier.verify(request.headers.get("authorization"), audience)
        except AuthenticationError:
            raise
        except Exception as exc:  # a verifier bug must fail closed (401), never answer unauthenticated
            log_unexpected(log, "verifying a JWT", exc)
            raise AuthenticationError("JWT verification failed") from None
        tenant = claims.get("tenant")
        return f"{claims.get('iss')}|{tenant}" if isinstance(tenant, str) and tenant else str(claims.get("iss"))

    async def read_body(request: Request) -> bytes:
        """The JSON body: 415 unless labelled JSON, 413 beyond ``max_request_bytes`` (counted while
        streaming), 408 unless it all arrives within ``body_read_timeout_s`` (cds_service/http_limits.py)."""
        return await read_limited_body(
            request, max_bytes=settings.max_request_bytes, timeout_s=settings.body_read_timeout_s
        )

    def unavailable_response() -> JSONResponse:
        """HTTP 200 with one honest card: what an unexpected error in the hook route answers."""
        return JSONResponse(to_json(CdsResponse(cards=[unavailable_card("internal error", settings.base_url())])))

    # Every non-2xx answer of the CDS Hooks API carries an OperationOutcome (CDS Hooks 3.0 ballot); the
    # status codes and headers 2.0 clients read are unchanged. The viewer's own pages stay HTML.
    @app.exception_handler(AuthenticationError)
    async def _unauthorised(_: Request, exc: AuthenticationError) -> Response:
        log.warning("401: %s", exc)  # the reason is for the operator; the client learns nothing about it
        response = operation_outcome(401, "login", "authentication failed: a valid CDS Hooks JWT is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        """Unknown routes (404), wrong methods (405)… as OperationOutcomes, keeping their headers (Allow)."""
        response = operation_outcome(exc.status_code, ISSUE_CODES.get(exc.status_code, "processing"), str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return operation_outcome(400, "invalid", f"invalid request ({len(exc.errors())} problems)")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        log_unexpected(log, "answering a request", exc)
        return operation_outcome(500, "exception", "internal error")

    @app.exception_handler(BadRequestError)
    async def _bad_request(_: Request, exc: BadRequestError) -> Response:
        log.info("400: %s", exc)
        return operation_outcome(400, "invalid", str(exc))

    @app.exception_handler(PayloadTooLargeError)
    async def _too_large(_: Request, exc: PayloadTooLargeError) -> Response:
        log.info("413: %s", exc)
        return operation_outcome(413, "too-long", str(exc))

    @app.exception_handler(RequestTimeoutError)
    async def _body_timeout(_: Request, exc: RequestTimeoutError) -> Response:
        log.info("408: %s", exc)
        response = operation_outcome(408, "timeout", str(exc))
        response.headers["Connection"] = "close"  # RFC 9110 §15.5.9: the rest of the body is not awaited
        return response

    @app.exception_handler(UnsupportedMediaTypeError)
    async def _media_type(_: Request, exc: UnsupportedMediaTypeError) -> Response:
        log.info("415: %s", exc)
        return operation_outcome(415, "not-supported", str(exc))

    @app.exception_handler(CLIENT_GONE)
    async def _client_gone(_: Request, exc: Exception) -> Response:
        """The client went away mid-request: one line, no traceback (nobody reads the answer)."""
        log.info("client disconnected before its request was read")
        return Response(status_code=400)

    @app.exception_handler(PrefetchUnavailableError)
    async def _precondition(_: Request, exc: PrefetchUnavailableError) -> Response:
        log.info("412: %s", exc)
        return operation_outcome(412, "not-found", str(exc))

    # Probes (cds_service/probes.py): no I/O, whatever PostgreSQL or Triton do.
    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: the process answers (restart it when this fails); dependencies as last checked."""
        status, body = probes.liveness()
        return JSONResponse(body, status_code=status)

    @app.get("/startupz")
    async def startupz() -> JSONResponse:
        """Start-up: the app has started; Kubernetes' other probes wait for it."""
        status, body = probes.startup()
        return JSONResponse(body, status_code=status)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: this replica can serve (a shared dependency down degrades answers, not readiness)."""
        status, body = probes.readiness()
        return JSONResponse(body, status_code=status)

    if not settings.metrics_port:  # else /metrics is served on its own port, off the public one

        @app.get("/metrics")
        async def metrics() -> Response:
            body, content_type = await exposition_async()
            return Response(body, media_type=content_type)

    @app.get("/cds-services")
    async def discovery(request: Request) -> dict:
        await authenticate(request)
        return {"services": [to_json(service) for service in services.values()]}

    @app.post("/cds-services/{service_id}")
    async def hook(service_id: str, request: Request) -> Response:
        caller = await authenticate(request)
        service = services.get(service_id)
        if service is None:
            return operation_outcome(404, "not-found", "unknown CDS service id")
        body = await read_body(request)
        try:
            hook_request = parse_hook_request(
                body,
                service.hook,
                max_depth=settings.max_json_depth,
                max_number_digits=settings.max_json_number_digits,
            )
            outcome = await request.app.state.pipeline.handle(hook_request, caller)
            try:
                await asyncio.to_thread(feedback.record_cards, service_id, outcome.response.cards, outcome.report)
            except Exception as exc:  # the clinician gets the cards; only the feedback join is lost
                STORE_ERRORS.labels(operation="record_cards").inc()
                log.warning("issued cards not recorded: %s", type(exc).__name__)
            return JSONResponse(to_json(outcome.response))
        except (BadRequestError, PrefetchUnavailableError, PayloadTooLargeError, AuthenticationError):
            raise  # answered by their handlers (400 / 412 / 413 / 401)
        except Exception as exc:  # last resort: a bug must not answer 500 (nor drop the connection)
            log_unexpected(log, "answering a hook", exc)
            return unavailable_response()

    @app.post("/cds-services/{service_id}/feedback")
    async def post_feedback(service_id: str, request: Request) -> Response:
        await authenticate(request)
        if service_id not in services:
            return operation_outcome(404, "not-found", "unknown CDS service id")
        # Input faults are BadRequestError (400, naming the field) from parse_feedback; a store that
        # fails (database restarting) is a 503 the EHR can retry.
        body = await read_body(request)
        entries = parse_feedback(
            body, max_depth=settings.max_json_depth, max_number_digits=settings.max_json_number_digits
        ).feedback
        try:
            new = await asyncio.to_thread(feedback.add, service_id, entries)
        except Exception as exc:  # the store is down: the EHR may retry (nothing was half-stored)
            STORE_ERRORS.labels(operation="feedback").inc()
            log.warning("feedback not stored: %s", type(exc).__name__)
            return operation_outcome(503, "transient", "feedback store unavailable; retry later")
        log.info("feedback: %d entries, %d new", len(entries), new)
        return Response(status_code=200)

    return app
