"""Orthanc (Debian package) with its DICOMweb and GDCM plugins, authentication on, loopback only."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx

from cds_service.demo import free_port
from tests.servers.base import ServerProcess

BINARY = Path("/usr/sbin/Orthanc")
PLUGINS = Path("/usr/share/orthanc/plugins")


class OrthancServer:
    """A throw-away Orthanc in ``workdir``: ``dicomweb_url``, ``auth``, ``upload()``."""

    def __init__(self, workdir: Path, extra_config: dict | None = None) -> None:
        self.workdir = workdir
        self.extra_config = extra_config or {}  # e.g. a DICOM port, modalities and a Lua script
        self.port = free_port()
        self.user, self.password = "hipcad", secrets.token_urlsafe(12)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = f"{self.base_url}/dicom-web"
        self.process: ServerProcess | None = None

    @property
    def auth(self) -> tuple[str, str]:
        return self.user, self.password

    @staticmethod
    def installed() -> bool:
        return BINARY.exists() and (PLUGINS / "libOrthancDicomWeb.so").exists()

    def start(self) -> OrthancServer:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "hipcad-test-pacs",
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,  # Orthanc listens on all interfaces but refuses non-loopback peers
            "HttpCompressionEnabled": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomServerEnabled": False,
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so"), str(PLUGINS / "libOrthancGdcm.so")],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.port}"},
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config | self.extra_config))
        self.process = ServerProcess("Orthanc", [str(BINARY), str(path)], self.workdir / "orthanc.log")
        self.process.start(lambda: httpx.get(f"{self.base_url}/system", auth=self.auth, timeout=1).status_code == 200)
        return self

    def upload(self, data: bytes) -> dict:
        """POST /instances (a DICOM file's bytes); returns Orthanc's answer."""
        response = httpx.post(
            f"{self.base_url}/instances",
            content=data,
            auth=self.auth,
            headers={"Content-Type": "application/dicom"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process:
            self.process.stop()
