"""The real SMART App Launcher (``../shared/tools/smart-launcher``, SMART launcher v2) on loopback.

The source tree is read-only and ships without ``node_modules``: it is copied once into a cache folder
named after its ``package-lock.json`` and installed there with ``npm ci`` (about 40 s, the npm
registry), then started per test session with ``npm run start:prod`` as its README says.

The launcher's FHIR proxy drops the ``Authorization`` header it verified, while the test FHIR server
(:mod:`tests.servers.fhir`) requires its own bearer token; :class:`BearerForwarder` sits between them
and adds it, standing for the hospital network between an EHR's authorization layer and its FHIR store.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from cds_service.demo import free_port
from tests.servers.base import ServerProcess

SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "smart-launcher"
NODE_INSTALL = Path(__file__).resolve().parents[2] / ".ci" / "install-node.sh"


def available() -> bool:
    """The launcher's source and node/npm are present."""
    return (
        (SOURCE / "package-lock.json").exists() and shutil.which("node") is not None and shutil.which("npm") is not None
    )


def installed_copy() -> Path:
    """A copy of the launcher with its ``node_modules`` (installed once per ``package-lock.json``)."""
    lock = hashlib.sha256((SOURCE / "package-lock.json").read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("HIPCAD_TOOLS_CACHE", tempfile.gettempdir()))
    target = cache / f"hipcad-smart-launcher-{lock}"
    if (target / "node_modules" / ".package-lock.json").exists():
        return target
    staging = Path(tempfile.mkdtemp(prefix="smart-launcher-", dir=cache))
    shutil.copytree(SOURCE, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("node_modules", ".git"))
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=staging, check=True, capture_output=True, timeout=600)
    try:
        staging.rename(target)
    except OSError:  # another session installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


class SmartLauncher:
    """``npm run start:prod`` of the launcher in front of ``fhir_base``; ``base_url``, ``iss``, ``launch_url()``."""

    def __init__(self, workdir: Path, fhir_base: str) -> None:
        self.workdir = workdir
        self.fhir_base = fhir_base
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.iss = f"{self.base_url}/v/r4/fhir"
        self.process: ServerProcess | None = None

    def start(self) -> SmartLauncher:
        folder = installed_copy()
        env = {
            **os.environ,
            "NODE_ENV": "production",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "FHIR_SERVER_R4": self.fhir_base,
            "FHIR_SERVER_R2": "",
            "FHIR_SERVER_R3": "",
        }
        npm = shutil.which("npm") or "npm"
        self.process = ServerProcess(
            "SMART launcher", [npm, "--prefix", str(folder), "run", "start:prod"], self.workdir / "launcher.log", env
        )
        config = f"{self.iss}/.well-known/smart-configuration"
        self.process.start(lambda: httpx.get(config, timeout=1).status_code == 200, timeout_s=90)
        return self

    def launch_url(self, app_launch_url: str, patient: str, provider: str = "hipcad-test-practitioner") -> str:
        """The launcher's EHR launch of ``app_launch_url`` for ``patient`` (a single provider: no login page)."""
        query = httpx.QueryParams(
            {"launch_uri": app_launch_url, "fhir_ver": "4", "patient": patient, "provider": provider}
        )
        return f"{self.base_url}/launcher?{query}"

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@contextlib.contextmanager
def bearer_forwarder(upstream: str, token: str) -> Iterator[str]:
    """A loopback HTTP server forwarding every request to ``upstream`` with ``Authorization: Bearer token``.

    Yields its base URL (the same path as ``upstream``). Only for the tests: it trusts its callers.
    """
    upstream_origin = httpx.URL(upstream).copy_with(path="/", query=None)
    base_path = httpx.URL(upstream).path.rstrip("/")

    class Forward(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
            headers["Authorization"] = f"Bearer {token}"
            path = self.path
            if not path.startswith(base_path + "/"):
                # The launcher's own encounter lookup ("/Encounter/?_count=1&patient=<id>") is resolved
                # against the origin, dropping the base's path, and names the patient by bare id, which
                # Medplum's reference search does not match: read it relative to the base, as Patient/<id>.
                path = base_path + re.sub(r"([?&]patient=)(?!Patient%2F|Patient/)", r"\1Patient/", path)
            url = str(upstream_origin).rstrip("/") + path
            answer = httpx.request(self.command, url, headers=headers, content=body, timeout=30)
            self.send_response(answer.status_code)
            for name in ("Content-Type", "Location", "ETag", "Last-Modified"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{base_path}"
    finally:
        server.shutdown()
        server.server_close()
