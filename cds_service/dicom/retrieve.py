"""DICOMweb retrieval (WADO-RS / QIDO-RS, DICOM PS3.18) through ``dicomweb_client``.

One code path for both stores: ``DICOMfileClient`` serves a local folder (``file://`` address, the
embedded default) and ``DICOMwebClient`` a PACS; both are ``dicomweb_client.DICOMClient``. Only
addresses under an allow-listed base are contacted (the ImagingStudy chooses the address, so an
open client would be an SSRF hole): the check is the shared :class:`cds_service.outbound.UrlPolicy`,
and ``file://`` addresses must resolve inside the local folder. Redirects are never followed. Calls
are blocking in the library, so they run in a worker thread with a deadline. Clients are kept per
(allowed base, canonical address), at most ``max_clients``, least recently used out: the address
is attacker-chosen, so an unbounded cache would be a thread and memory leak.

The UIDs become path segments of the WADO-RS/QIDO-RS URLs (PS3.18 §10.4), so they are held to the
UID grammar (PS3.5 §9.1: digits and dots, at most 64 characters) before any URL is built: a
"UID" of ``..`` would walk out of the allow-listed base once urllib3 removes dot segments.

A folder store serves only files inside its folder: ``DICOMfileClient`` indexes ``**/*`` and
follows symbolic links, so entries whose file resolves outside the folder are dropped from the
index and an instance's file is checked again just before it is read (the link may have changed
since). Its index is built when the store is opened; an instance or study it does not hold (a
miss) refreshes it, at most once per ``index_refresh_s`` per store, so files that arrive later are
found without a restart, and a stream of unknown UIDs cannot make every request re-scan the folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import pydicom
import requests
from dicomweb_client import DICOMfileClient, DICOMwebClient
from dicomweb_client.api import DICOMClient

from cds_service.dicom.stow import store_results
from cds_service.errors import StudyUnavailableError, UnusableImageError
from cds_service.outbound import AllowedBase, DisallowedUrlError, UrlPolicy, parse

log = logging.getLogger(__name__)

#: Ask for the stored transfer syntax: DICOMfileClient never transcodes, and we decode locally.
STORED = (("application/dicom", "*"),)
#: A UID (PS3.5 §9.1): dot-separated numeric components. Leading zeros are tolerated (seen in the
#: wild); what matters here is that no component is empty or a dot segment.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class RedirectRefusedError(requests.HTTPError):
    """A DICOMweb store answered 3xx; the redirect is not followed (its target could be off the allow-list)."""


class _RedirectResponse(requests.Response):
    def raise_for_status(self) -> None:
        raise RedirectRefusedError(f"redirect (HTTP {self.status_code}) not followed", response=self)


class _StoreSession(requests.Session):
    """A session for one DICOMweb store: a timeout on every call, and redirects never followed.

    The refusal is raised from ``raise_for_status``, which dicomweb_client calls once after its
    retry loop: raising inside the request would be retried (the loop retries on every exception),
    repeating the request five times with back-off.
    """

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        # Not max_redirects = 0: with it requests raises even when asked not to follow (it still
        # prepares the next request), and that exception would be retried as above.

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["allow_redirects"] = False
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        response = super().request(method, url, *args, **kwargs)
        if 300 <= response.status_code < 400:
            response.__class__ = _RedirectResponse  # same object, a raise_for_status that refuses
        return response


@dataclass(frozen=True)
class DicomwebCredentials:
    """How to authenticate to one DICOMweb base: HTTP basic or a bearer token (never the EHR's FHIR token)."""

    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return f"DicomwebCredentials(username={self.username!r}, password=<redacted>, bearer_token=<redacted>)"

    def session(self, timeout_s: float) -> requests.Session:
        """A session with these credentials that never follows redirects."""
        session = _StoreSession(timeout_s)
        if self.username is not None:
            session.auth = (self.username, self.password or "")
        if self.bearer_token:
            session.headers["Authorization"] = f"Bearer {self.bearer_token}"
        return session


@dataclass
class _Store:
    """One cached image store: its client, and what must be released with it."""

    client: DICOMClient | None = None
    #: Folder stores only: DICOMfileClient's SQLite index is bound to the thread that made it.
    executor: ThreadPoolExecutor | None = None
    session: requests.Session | None = None
    #: Folder stores only: ``time.monotonic()`` of the last refresh of the index after a miss.
    refreshed_at: float | None = None

    def release(self) -> None:
        # Work already queued still runs (wait=False); the thread then exits.
        if self.executor is not None:
            self.executor.shutdown(wait=False)
        if self.session is not None:
            self.session.close()


T = TypeVar("T")


def _client(store: _Store, location: AllowedBase) -> DICOMClient:
    """The store's client; a folder store's is built here, on the one thread its index is bound to."""
    if store.client is None:
        # DICOMfileClient reads the URL's path without unquoting it: hand it the plain path.
        store.client = DICOMfileClient(url=f"file://{location.folder}", update_db=True, in_memory=True)
        _drop_links_out(store.client, location)
    return store.client


def _uid(value: str | None) -> str | None:
    """``value`` if it is a DICOM UID (PS3.5 §9.1) or empty; raises StudyUnavailableError otherwise."""
    if value and (len(value) > 64 or not _UID.fullmatch(value)):
        raise StudyUnavailableError("the study reference holds something other than a DICOM UID")
    return value


# DICOMfileClient keeps its index in ``_db_manager`` and offers no public way to read an instance's
# file path or to re-index: the three helpers below are the only places that reach into it.
def _drop_links_out(client: DICOMfileClient, location: AllowedBase) -> None:
    """Remove from the index every file that resolves outside the store's folder (a symlink out)."""
    manager = client._db_manager
    outside = [
        path.relative_to(manager.base_dir) for path in manager._get_indexed_file_paths() if not _inside(path, location)
    ]
    if outside:  # the library's clean-up matches the relative paths it stored
        manager._cleanup_db(outside)
        log.warning("folder store: %d file(s) behind links out of the folder are not served", len(outside))


def _indexed_file(client: DICOMfileClient, study_uid: str, series_uid: str, sop_uid: str) -> Path | None:
    """The indexed file of one instance, or None when the index does not hold it."""
    try:
        return Path(client._db_manager.get_instance_file_path(study_uid, series_uid, sop_uid))
    except OSError:
        return None


def _reindex(client: DICOMfileClient, location: AllowedBase) -> None:
    """Index files added since (and forget removed ones), then drop links out of the folder."""
    client._db_manager._update_db()
    _drop_links_out(client, location)


def _inside(path: Path, location: AllowedBase) -> bool:
    """True when ``path``, symlinks resolved, lies in the folder store's folder."""
    folder = location.folder
    return folder is not None and path.resolve().is_relative_to(folder)


def _file_bases_folder(allowed_bases: Sequence[str]) -> Path | None:
    """The folder holding every ``file`` base (backwards compatibility when no local folder is given)."""
    folders = [
        Path(unquote(urlsplit(base).path)).resolve()
        for base in allowed_bases
        if urlsplit(base).scheme.lower() == "file"
    ]
    return Path(os.path.commonpath(folders)) if folders else None


def _find(
    client: DICOMClient, location: AllowedBase, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> tuple[str, str] | None:
    """The (series, instance) UIDs to retrieve: the given ones, or the study's first; None on a miss.

    A PACS answers a miss itself (HTTP 404); a folder store's index is asked here, so that a miss
    can refresh it.
    """
    if series_uid and sop_uid:
        if location.scheme == "file" and _indexed_file(client, study_uid, series_uid, sop_uid) is None:
            return None
        return series_uid, sop_uid
    found = client.search_for_instances(study_instance_uid=study_uid)
    if not found:
        return None
    first = pydicom.Dataset.from_json(found[0])
    # The search answer chooses these UIDs: they are held to the grammar like the request's.
    return _uid(str(first.SeriesInstanceUID)) or "", _uid(str(first.SOPInstanceUID)) or ""


class DicomRetriever:
    """Retrieves instances from allow-listed DICOMweb bases and the local folder store."""

    def __init__(
        self,
        allowed_bases: Sequence[str],
        timeout_s: float = 10.0,
        credentials: Mapping[str, DicomwebCredentials] | None = None,
        local_folder: Path | None = None,
        max_clients: int = 16,
        index_refresh_s: float = 10.0,
    ) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.index_refresh_s = index_refresh_s
        self.policy = UrlPolicy(allowed_bases, local_folder or _file_bases_folder(allowed_bases))
        self.allowed_bases = [base.url for base in self.policy.bases]
        self.timeout_s = timeout_s
        self.max_clients = max_clients
        # Most specific base first, so nested bases with their own credentials win.
        creds = [(parse(base)[0], value) for base, value in (credentials or {}).items()]
        self._credentials = sorted(creds, key=lambda item: -len(item[0].segments))
        self._stores: OrderedDict[tuple[str, str], _Store] = OrderedDict()
        self._lock = threading.Lock()

    def _locate(self, address: str) -> tuple[AllowedBase, AllowedBase]:
        """The address's allowed base and canonical location; raises DisallowedUrlError."""
        base, location, query = self.policy.locate(address)
        if query:  # the clients drop it: refuse rather than treat two different strings as one store
            raise DisallowedUrlError("query not allowed")
        return base, location

    def is_allowed(self, address: str) -> bool:
        """True when ``address`` may be contacted."""
        return self.allowed_base(address) is not None

    def allowed_base(self, address: str) -> str | None:
        """The canonical allow-listed base ``address`` lies under (e.g. for cache keys), or None."""
        try:
            return self._locate(address)[0].url
        except DisallowedUrlError:
            return None

    @property
    def client_count(self) -> int:
        """How many clients are open now (at most ``max_clients``)."""
        return len(self._stores)

    def close(self) -> None:
        """Release every client, session and folder-store thread (a later call opens new ones)."""
        with self._lock:
            stores = list(self._stores.values())
            self._stores.clear()
        for store in stores:
            store.release()

    def _store(self, base: AllowedBase, location: AllowedBase) -> _Store:
        """The cached store for this location, made most recently used; the caller holds the lock."""
        key = (base.url, location.url)
        store = self._stores.get(key)
        if store is not None:
            self._stores.move_to_end(key)
            return store
        if location.scheme == "file":
            store = _Store(executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicom-folder"))
        else:
            creds = next((c for b, c in self._credentials if b.contains(location)), DicomwebCredentials())
            session = creds.session(self.timeout_s)
            # The client passes its own timeout (default 20 s) to every request: give it ours.
            client = DICOMwebClient(url=location.url, session=session, timeout=self.timeout_s)
            store = _Store(client=client, session=session)
        self._stores[key] = store
        while len(self._stores) > self.max_clients:
            self._stores.popitem(last=False)[1].release()
        return store

    def _retrieve(
        self, store: _Store, location: AllowedBase, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> pydicom.Dataset:
        client = _client(store, location)
        found = _find(client, location, study_uid, series_uid, sop_uid)
        if found is None and self._refresh(store, location):
            found = _find(client, location, study_uid, series_uid, sop_uid)
        if found is None:
            raise StudyUnavailableError("the study has no instances in the image store")
        series_uid, sop_uid = found
        if location.scheme == "file":
            path = _indexed_file(client, study_uid, series_uid, sop_uid)
            if path is None or not _inside(path, location):  # checked again: the link may have changed
                raise StudyUnavailableError("the instance's file is a link out of the folder store (refused)")
        return client.retrieve_instance(study_uid, series_uid, sop_uid, media_types=STORED)

    def _refresh(self, store: _Store, location: AllowedBase) -> bool:
        """Re-index a folder store after a miss, unless it was done less than ``index_refresh_s`` ago."""
        now = time.monotonic()
        if location.scheme != "file" or store.client is None:
            return False
        if store.refreshed_at is not None and now - store.refreshed_at < self.index_refresh_s:
            return False
        store.refreshed_at = now
        _reindex(store.client, location)
        return True

    async def retrieve_instance(
        self, address: str, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> pydicom.Dataset:
        """Fetch one instance (the first of the study when UIDs are missing) in its stored syntax."""
        for uid in (study_uid, series_uid, sop_uid):
            _uid(uid)
        if not study_uid:
            raise StudyUnavailableError("the study reference has no Study Instance UID")

        def call(store: _Store, location: AllowedBase) -> pydicom.Dataset:
            return self._retrieve(store, location, study_uid, series_uid, sop_uid)

        return await self._run(address, call)

    async def store_instances(self, address: str, datasets: Sequence[pydicom.Dataset]) -> list[str]:
        """STOW-RS ``datasets`` to the allow-listed store at ``address`` (its own credentials).

        The same client, thread and error mapping as retrieval: results go back only to a store the
        service may read from. Returns the WADO-RS URLs of the stored instances.
        """

        def call(store: _Store, location: AllowedBase) -> list[str]:
            return store_results(location.url, datasets, _client(store, location))

        return await self._run(address, call)

    async def _run(self, address: str, call: Callable[[_Store, AllowedBase], T]) -> T:
        """``call(store, location)`` on the store's thread, under the deadline, errors as StudyUnavailableError."""
        try:
            base, location = self._locate(address)
        except DisallowedUrlError as exc:  # the reason only: the address may carry identifiers
            raise StudyUnavailableError(f"the study's DICOMweb address is not on the allow-list ({exc})") from exc
        try:
            with self._lock:  # submit under the lock: an evicted executor accepts no new work
                store = self._store(base, location)
                # A folder store's own thread; DICOMweb calls go to the loop's default pool (None).
                pending = asyncio.get_running_loop().run_in_executor(store.executor, call, store, location)
            return await asyncio.wait_for(pending, self.timeout_s)
        except (StudyUnavailableError, UnusableImageError):  # e.g. a deflated data set over its bound
            raise
        except TimeoutError as exc:
            raise StudyUnavailableError(f"the image store did not answer within {self.timeout_s:.0f} s") from exc
        except (RedirectRefusedError, requests.TooManyRedirects) as exc:
            raise StudyUnavailableError("the image store answered with a redirect (not followed)") from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise StudyUnavailableError(f"the image store answered HTTP {status}") from exc
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise StudyUnavailableError(f"the image store is unreachable ({type(exc).__name__})") from exc
        except Exception as exc:  # missing files, parse errors: all mean "no image"
            raise StudyUnavailableError(f"image retrieval failed ({type(exc).__name__})") from exc
