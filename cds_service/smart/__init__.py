"""The heat-map viewer as a SMART App Launch 2.0 app (EHR launch and standalone launch).

    /smart/launch (iss, launch) → .well-known/smart-configuration → authorize (PKCE S256)
    → /smart/callback (code, state) → token → the result (appContext, else FHIR) → /smart/view → viewer

A face of its own beside the viewer it opens: it uses the viewer's rendering and the store, never the
analysis pipeline. Public API: :func:`build_router`.
"""

from cds_service.smart.routes import LAUNCH_PATH, build_router

__all__ = ["LAUNCH_PATH", "build_router"]
