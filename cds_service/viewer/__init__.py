"""Heat-map viewer: the radiograph with the heat map over it, behind a short-lived signed link.

    stored result (shared store, TTL) → viewer link row → signed token (HMAC, expiry) → GET /viewer/{token}

Public API for the app:

* :func:`build_router` — the FastAPI router (``app.include_router(build_router(settings, store))``).
* :func:`viewer_link` / :func:`issue_token` / :func:`viewer_url` — the card's ``absolute`` link.
* :func:`smart_app_context` — the ``appContext`` of the card's ``smart`` link.
"""

from cds_service.viewer.routes import build_router, issue_token, smart_app_context, viewer_link, viewer_url
from cds_service.viewer.signing import InvalidToken, LinkExpired, LinkTampered, sign, verify

__all__ = [
    "InvalidToken",
    "LinkExpired",
    "LinkTampered",
    "build_router",
    "issue_token",
    "sign",
    "smart_app_context",
    "verify",
    "viewer_link",
    "viewer_url",
]
