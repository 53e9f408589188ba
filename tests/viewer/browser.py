"""Helpers for driving Debian's chromium through Playwright, offline, and serving the viewer in a thread."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI

from cds_service.demo import running_server
from cds_service.settings import Settings
from cds_service.store import AsyncStore
from cds_service.viewer import build_router

CHROMIUM = Path("/usr/bin/chromium")
#: No network beyond loopback: no QUIC, no background fetches, no component or sync traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def launch_chromium(playwright: Any) -> Any:
    """The system chromium, headless; Playwright's ``launch`` gives it a fresh temporary profile."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def offline_only(context: Any, blocked: list[str]) -> None:
    """Abort (and record) every request that is not to the loopback service."""

    def handle(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", handle)


def viewer_server(settings: Settings, store: AsyncStore) -> AbstractContextManager[str]:
    """A real uvicorn server with only the viewer's router, in a thread; yields its base URL."""
    app = FastAPI()
    app.include_router(build_router(settings, store))
    return running_server(app, settings)
