"""DICOMweb retrieval (WADO-RS / QIDO-RS, DICOM PS3.18) through ``dicomweb_client``.

One code path for both stores: ``DICOMfileClient`` serves a local folder (``file://`` address, the
embedded default) and ``DICOMwebClient`` a PACS; both are ``dicomweb_client.DICOMClient``. Only
addresses under an allow-listed base are contacted (the ImagingStudy chooses the address, so an
open client would be an SSRF hole). Calls are blocking in the library, so they run in a worker
thread with a deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pydicom
import requests
from dicomweb_client import DICOMfileClient, DICOMwebClient
from dicomweb_client.api import DICOMClient

from cds_service.errors import StudyUnavailableError

log = logging.getLogger(__name__)

#: Ask for the stored transfer syntax: DICOMfileClient never transcodes, and we decode locally.
STORED = (("application/dicom", "*"),)


@dataclass(frozen=True)
class DicomwebCredentials:
    """How to authenticate to one DICOMweb base: HTTP basic or a bearer token (never the EHR's FHIR token)."""

    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return f"DicomwebCredentials(username={self.username!r}, password=<redacted>, bearer_token=<redacted>)"

    def session(self, timeout_s: float) -> requests.Session:
        session = requests.Session()
        if self.username is not None:
            session.auth = (self.username, self.password or "")
        if self.bearer_token:
            session.headers["Authorization"] = f"Bearer {self.bearer_token}"
        session.request = functools.partial(session.request, timeout=timeout_s)  # type: ignore[method-assign]
        return session


class DicomRetriever:
    """Retrieves instances from allow-listed DICOMweb bases; clients are cached per base."""

    def __init__(
        self,
        allowed_bases: Sequence[str],
        timeout_s: float = 10.0,
        credentials: Mapping[str, DicomwebCredentials] | None = None,
    ) -> None:
        self.allowed_bases = [base.rstrip("/") for base in allowed_bases]
        self.timeout_s = timeout_s
        self.credentials = {base.rstrip("/"): value for base, value in (credentials or {}).items()}
        # DICOMfileClient keeps its index in an SQLite connection bound to the thread that made it: each
        # folder store gets one worker thread of its own. Web clients run on the shared default pool.
        self._file_threads: dict[str, ThreadPoolExecutor] = {}
        self._clients: dict[str, DICOMClient] = {}
        self._lock = threading.Lock()

    def is_allowed(self, address: str) -> bool:
        address = address.rstrip("/")
        return any(address == base or address.startswith(base + "/") for base in self.allowed_bases)

    def _client(self, address: str) -> DICOMClient:
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                if address.startswith("file://"):
                    client = DICOMfileClient(url=address, update_db=True, in_memory=True)
                else:
                    base = next((b for b in self.credentials if address == b or address.startswith(b + "/")), None)
                    creds = self.credentials.get(base, DicomwebCredentials()) if base else DicomwebCredentials()
                    client = DICOMwebClient(url=address, session=creds.session(self.timeout_s))
                self._clients[address] = client
            return client

    def _retrieve(self, address: str, study_uid: str, series_uid: str | None, sop_uid: str | None) -> pydicom.Dataset:
        client = self._client(address)
        if not (series_uid and sop_uid):
            found = client.search_for_instances(study_instance_uid=study_uid)
            if not found:
                raise StudyUnavailableError("the study has no instances in the image store")
            first = pydicom.Dataset.from_json(found[0])
            series_uid, sop_uid = str(first.SeriesInstanceUID), str(first.SOPInstanceUID)
        return client.retrieve_instance(study_uid, series_uid, sop_uid, media_types=STORED)

    async def retrieve_instance(
        self, address: str, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> pydicom.Dataset:
        """Fetch one instance (the first of the study when UIDs are missing) in its stored syntax."""
        if not self.is_allowed(address):
            raise StudyUnavailableError("the study's DICOMweb address is not on the allow-list")
        call = functools.partial(self._retrieve, address, study_uid, series_uid, sop_uid)
        if address.startswith("file://"):
            with self._lock:
                executor = self._file_threads.setdefault(
                    address, ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicom-folder")
                )
            pending = asyncio.get_running_loop().run_in_executor(executor, call)
        else:
            pending = asyncio.to_thread(call)
        try:
            return await asyncio.wait_for(pending, self.timeout_s)
        except StudyUnavailableError:
            raise
        except TimeoutError as exc:
            raise StudyUnavailableError(f"the image store did not answer within {self.timeout_s:.0f} s") from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise StudyUnavailableError(f"the image store answered HTTP {status}") from exc
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise StudyUnavailableError(f"the image store is unreachable ({type(exc).__name__})") from exc
        except Exception as exc:  # missing files, parse errors: all mean "no image"
            raise StudyUnavailableError(f"image retrieval failed ({type(exc).__name__})") from exc
