"""The in-memory FHIR R4 test server (Medplum's engine, ``tests/fhir_server``) with a bearer token."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import httpx

from cds_service.demo import free_port
from tests.servers.base import ServerProcess

SERVER_DIR = Path(__file__).resolve().parents[1] / "fhir_server"


class MedplumFhirServer:
    """A throw-away FHIR server: ``base_url`` (…/fhir), ``token``, ``put()``, ``get()``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.token = secrets.token_urlsafe(16)
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.process: ServerProcess | None = None

    @staticmethod
    def installed() -> bool:
        return shutil.which("node") is not None and (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").exists()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/fhir+json"}

    def start(self) -> MedplumFhirServer:
        env = {**os.environ, "FHIR_TOKEN": self.token}
        node = shutil.which("node") or "node"
        self.process = ServerProcess(
            "FHIR server", [node, str(SERVER_DIR / "server.js"), str(self.port)], self.workdir / "fhir.log", env
        )
        self.process.start(lambda: httpx.get(f"{self.base_url}/metadata", timeout=1).status_code == 200)
        return self

    def put(self, resource: dict) -> dict:
        """Create or update a resource with its own id (PUT)."""
        url = f"{self.base_url}/{resource['resourceType']}/{resource['id']}"
        response = httpx.put(url, json=resource, headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, resource: dict) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}/{resource['resourceType']}", json=resource, headers=self.headers, timeout=10
        )

    def get(self, path: str, **params: str) -> dict:
        response = httpx.get(f"{self.base_url}/{path}", params=params, headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process:
            self.process.stop()
