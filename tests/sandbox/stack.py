"""The real CDS Hooks sandbox (``../shared/tools/cds-hooks-sandbox/build``) on loopback, and the open FHIR
endpoint it needs in front of the FHIR test server.

The sandbox is a static single-page app: the browser itself calls the CDS service (CORS, an ES384 JWT
signed with the sandbox's published key) and the FHIR server named by ``fhirServiceUrl``, which must be
open (no token) and answer CORS. The FHIR test server (:mod:`tests.servers.fhir`) requires a bearer token,
sends no CORS headers and takes JSON bodies only, so :func:`open_fhir_gateway` stands in for an EHR's open
sandbox FHIR endpoint: it adds the token, answers CORS for the sandbox's origin, and turns the sandbox's
``POST <type>/_search`` (form body, FHIR R4 RESTful API 3.1.1.5.7 "search") into the equivalent GET.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pydicom

from cds_service.demo import free_port
from cds_service.ehr import imaging_study_bundle
from cds_service.settings import Settings

#: The chart's patient (on the FHIR test server; the sample study's ImagingStudy names it).
PATIENT = "hipcad-sandbox-patient"
SANDBOX_BUILD = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "cds-hooks-sandbox" / "build"

#: Response headers of the FHIR server worth passing on to the browser.
FORWARDED_HEADERS = ("Content-Type", "Location", "ETag", "Last-Modified")


def put_chart(fhir: Any, dicom_folder: Path) -> None:
    """Put the patient's chart on ``fhir`` (a :class:`tests.servers.fhir.MedplumFhirServer`): the Patient, and
    the ImagingStudy of the sample study in ``dicom_folder`` with its DICOMweb Endpoint (the folder store)."""
    dataset = pydicom.dcmread(next(dicom_folder.rglob("*.dcm")), stop_before_pixels=True)
    fhir.put(
        {
            "resourceType": "Patient",
            "id": PATIENT,
            "name": [{"family": "Phantom", "given": ["Sandbox"]}],
            "gender": "female",
            "birthDate": "1940-03-01",
        }
    )
    for entry in imaging_study_bundle(dataset, PATIENT, dicom_folder.resolve().as_uri())["entry"]:
        fhir.put(entry["resource"])


def sandbox_available() -> bool:
    """The sandbox's production build is present."""
    return (SANDBOX_BUILD / "index.html").exists() and (SANDBOX_BUILD / "app.bundle.js").exists()


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler] | functools.partial) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port in a thread; yields ``http://127.0.0.1:<port>``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietStaticFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def sandbox_site() -> contextlib.AbstractContextManager[str]:
    """The sandbox's static build served on loopback; yields its origin (the page's CORS origin)."""
    return _serving(functools.partial(_QuietStaticFiles, directory=str(SANDBOX_BUILD)))


def sandbox_url(site: str, discovery_url: str, fhir_base: str, patient: str, **extra: str) -> str:
    """The sandbox page for ``patient``, with the CDS service and FHIR server given as query parameters
    (they win over what the page's localStorage holds); ``extra``: ``hook``, ``screen``."""
    query = {"serviceDiscoveryURL": discovery_url, "fhirServiceUrl": fhir_base, "patientId": patient, **extra}
    return f"{site}/?{urlencode(query)}"


def sandbox_settings(settings: Settings, site: str, fhir_base: str) -> Settings:
    """``settings`` changed as the README's sandbox recipe says: the sandbox's issuer trusted, its page's
    origin allowed by CORS, the FHIR base it passes as ``fhirServer`` allow-listed; a free port; the card's
    link ``absolute`` (the sandbox launches a ``smart`` link through its FHIR server's
    ``_services/smart/Launch``, which the test FHIR server does not offer; "View heat map" opens the viewer)."""
    return settings.model_copy(
        update={
            "port": free_port(),
            "dev_trust_cds_hooks_sandbox": True,
            "cors_allow_origins": [site],
            "fhir_allowed_bases": [fhir_base],
            "card_link": "absolute",
        }
    )


@contextlib.contextmanager
def open_fhir_gateway(upstream: str, token: str, origin: str) -> Iterator[str]:
    """An open FHIR endpoint for the browser in front of ``upstream`` (a stand-in, tests only).

    Every request is forwarded with ``Authorization: Bearer <token>``; CORS is answered for ``origin``
    only; ``POST <type>/_search`` with a form body is forwarded as ``GET <type>?<form>``. Yields the
    gateway's FHIR base (the same path as ``upstream``).
    """
    upstream_url = httpx.URL(upstream)
    base_path = upstream_url.path.rstrip("/")
    upstream_origin = f"{upstream_url.scheme}://{upstream_url.netloc.decode()}"

    class Gateway(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _cors(self) -> None:
            if self.headers.get("Origin") == origin:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Vary", "Origin")

        def do_OPTIONS(self) -> None:
            self.send_response(204)
            self._cors()
            self.send_header("Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", self.headers.get("Access-Control-Request-Headers", ""))
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            method, path = self.command, self.path
            content_type = self.headers.get("Content-Type", "")
            if method == "POST" and urlsplit(path).path.endswith("/_search"):
                form = (body or b"").decode()
                method, body = "GET", None
                path = urlsplit(path).path.removesuffix("/_search") + (f"?{form}" if form else "")
            headers = {
                "Accept": self.headers.get("Accept", "application/fhir+json"),
                "Authorization": f"Bearer {token}",
            }
            if body is not None:
                headers["Content-Type"] = content_type
            answer = httpx.request(method, upstream_origin + path, headers=headers, content=body, timeout=30)
            self.send_response(answer.status_code)
            self._cors()
            for name in FORWARDED_HEADERS:
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = _forward

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Gateway) as gateway:
        yield gateway + base_path
