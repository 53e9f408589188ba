"""The SMART App Launch face of the viewer: a static launch URL, the redirect URI, and the session's page.

    GET /smart/launch    EHR launch (``iss`` + ``launch``) or standalone launch (``iss`` or the
                         configured FHIR base, no ``launch``) → 302 to the EHR's authorize endpoint
    GET /smart/callback  ``code`` + ``state`` → token exchange → the result → 303 to /smart/view
    GET /smart/view      the session's result: 303 to a fresh signed viewer URL (the viewer renders it)

SMART App Launch 2.0 (https://hl7.org/fhir/smart-app-launch/app-launch.html). Every answer carries
``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer`` (the callback's URL holds the code),
and errors are small HTML pages with the viewer's style, never a 500. Nothing here logs a token, a
code, a patient id or a URL.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cds_service.settings import Settings
from cds_service.smart.discovery import LaunchRefused, canonical_iss, fetch_configuration
from cds_service.smart.oauth import authorization_url, exchange_code, new_code_verifier, new_state, redirect_uri
from cds_service.smart.result import find_result
from cds_service.smart.session import COOKIE, PendingLaunch, SessionStore, SmartSession
from cds_service.store import AsyncStore
from cds_service.viewer.routes import SECURITY_HEADERS, viewer_secret
from cds_service.viewer.signing import sign

log = logging.getLogger(__name__)

LAUNCH_PATH = "/smart/launch"
VIEW_PATH = "/smart/view"


def message_page(title: str, text: str, status: int) -> HTMLResponse:
    """A small page saying why a launch did not open the viewer (the viewer's style, no script)."""
    e = html.escape
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)}</title><link rel='stylesheet' href='/viewer/static/viewer.css'></head>"
        f"<body class='message'><main><h1>{e(title)}</h1><p>{e(text)}</p></main></body></html>"
    )
    return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)


def refused(exc: LaunchRefused) -> HTMLResponse:
    return message_page("The heat-map viewer could not be opened", str(exc), exc.status)


def build_router(settings: Settings, store: AsyncStore, sessions: SessionStore | None = None) -> APIRouter:
    """The SMART launch routes; include with ``app.include_router(build_router(settings, store))``."""
    router = APIRouter(tags=["smart"])
    sessions = sessions or SessionStore(settings.smart_session_ttl_s)
    secret = viewer_secret(settings)
    link_ttl_s = float(min(settings.viewer_link_ttl_s, settings.result_ttl_s))
    secure_cookie = urlsplit(redirect_uri(settings)).scheme == "https"

    def with_cookie(response: Response, session: SmartSession) -> Response:
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(settings.smart_session_ttl_s),
            path="/smart",
            httponly=True,
            samesite="lax",  # sent on the authorization server's top-level redirect back to the callback
            secure=secure_cookie,
        )
        return response

    def redirect(url: str, status: int) -> RedirectResponse:
        return RedirectResponse(url, status_code=status, headers=SECURITY_HEADERS)

    @router.get(LAUNCH_PATH, summary="SMART App Launch: EHR or standalone launch of the heat-map viewer")
    async def launch(request: Request, iss: str | None = None, launch: str | None = None) -> Response:
        try:
            if not iss and launch:
                raise LaunchRefused("The EHR launch did not name its FHIR server (iss).", 400)
            base = iss or settings.smart_standalone_iss
            if not base:
                raise LaunchRefused("Open this app from the EHR: the launch did not name a FHIR server.", 400)
            canonical = canonical_iss(base, settings.fhir_allowed_bases)  # before anything is contacted
            config = await fetch_configuration(canonical, settings.smart_auth_allowed_bases, settings.fhir_timeout_s)
        except LaunchRefused as exc:
            log.info("SMART launch refused (%d)", exc.status)
            return refused(exc)
        session = sessions.start(request.cookies.get(COOKIE))
        state, verifier = new_state(), new_code_verifier()
        sessions.add_pending(state, PendingLaunch(session.id, config, verifier))
        url = authorization_url(settings, config, state, verifier, launch)
        return with_cookie(redirect(url, 302), session)

    @router.get("/smart/callback", summary="SMART App Launch: redirect URI (authorization code)")
    async def callback(
        request: Request,
        code: str | None = None,
        state: str | None = None,
        error: str | None = None,
    ) -> Response:
        cookie = request.cookies.get(COOKIE)
        pending = sessions.take_pending(state, cookie) if state else None
        if pending is None:
            log.info("SMART callback refused: unknown, reused or foreign state")
            return message_page(
                "This launch cannot be completed",
                "The sign-in answer does not belong to a launch started in this browser, or was already used. "
                "Open the app from the EHR again.",
                400,
            )
        if error or not code:
            log.info("SMART authorization not granted")
            return message_page(
                "The EHR did not authorise this app", "Open the app from the EHR again, or ask its administrator.", 403
            )
        session = sessions.session(pending.session_id)
        if session is None:
            return message_page("This launch has expired", "Open the app from the EHR again.", 400)
        try:
            token = await exchange_code(settings, pending.config, code, pending.code_verifier)
            found = await find_result(
                store,
                secret,
                link_ttl_s,
                pending.config.iss,
                token.access_token,
                token.patient,
                token.scope,
                token.app_context,
                settings.fhir_timeout_s,
            )
        except LaunchRefused as exc:
            log.info("SMART launch not completed (%d)", exc.status)
            return refused(exc)
        session.iss, session.access_token, session.patient = pending.config.iss, token.access_token, token.patient
        session.result_id = found.result_id
        log.info("SMART launch completed (result from %s)", found.source)
        return with_cookie(redirect(VIEW_PATH, 303), session)

    @router.get(VIEW_PATH, summary="The SMART session's heat-map viewer page")
    async def view(request: Request) -> Response:
        session = sessions.session(request.cookies.get(COOKIE))
        if session is None or session.result_id is None:
            return message_page("No viewer session", "Open the app from the EHR to see the heat map.", 401)
        return redirect(f"/viewer/{sign(session.result_id, secret, int(link_ttl_s))}", 303)

    return router
