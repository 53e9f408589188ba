"""A small async FHIR R4 REST client (httpx) for the EHR's ``fhirServer``, with its bearer token.

Only allow-listed bases are contacted: the hook request chooses ``fhirServer``, so an open client
would let any caller make the service fetch arbitrary URLs (SSRF). The check is the shared
:class:`cds_service.outbound.UrlPolicy`; redirects are never followed (a 3xx could leave the
allow-list). The token is never logged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

import httpx

from cds_service.errors import PrefetchUnavailableError
from cds_service.outbound import UrlPolicy


class FhirClient:
    """Search and read on one FHIR server with one access token."""

    def __init__(self, base_url: str, access_token: str | None, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/fhir+json"}
        if access_token:  # an open FHIR server (e.g. a public sandbox) needs none
            self._headers["Authorization"] = f"Bearer {access_token}"
        self.timeout_s = timeout_s

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET ``path`` relative to the base (search or read); raises PrefetchUnavailableError."""
        return await self.get_url(f"{self.base_url}/{path}", params)

    async def get_url(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET an absolute URL on this server (e.g. a Bundle's ``next`` link), within ``timeout_s`` in all."""
        try:
            # httpx's timeout bounds each network read, not the request: a server trickling its
            # answer would hold the hook for as long as it likes. ``asyncio.timeout`` bounds the whole.
            async with (
                asyncio.timeout(self.timeout_s),
                httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client,
            ):
                response = await client.get(url, params=params, headers=self._headers)
        except TimeoutError as exc:
            raise PrefetchUnavailableError(f"FHIR server unreachable (no answer within {self.timeout_s:g} s)") from exc
        except httpx.HTTPError as exc:
            raise PrefetchUnavailableError(f"FHIR server unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise PrefetchUnavailableError(f"FHIR server answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise PrefetchUnavailableError("FHIR server answered with invalid JSON") from exc
        if not isinstance(body, dict):
            raise PrefetchUnavailableError("FHIR server answered with something other than a resource")
        return body

    async def imaging_studies(self, patient_id: str) -> dict[str, Any]:
        """The patient's ImagingStudies, newest first, as a searchset Bundle with their Endpoints."""
        bundle = await self.get(
            "ImagingStudy", {"patient": f"Patient/{patient_id}", "_sort": "-started", "_count": "20"}
        )
        return await self.with_endpoints(bundle)

    async def with_endpoints(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """The Bundle plus every ``Endpoint/<id>`` its ImagingStudies reference and it does not hold yet."""
        entries = list(bundle.get("entry") or [])
        seen = {
            f"Endpoint/{(e.get('resource') or {}).get('id')}"
            for e in entries
            if (e.get("resource") or {}).get("resourceType") == "Endpoint"
        }
        for entry in list(entries):
            study = entry.get("resource") or {}
            refs = [r.get("reference", "") for r in study.get("endpoint") or []]
            refs += [r.get("reference", "") for s in study.get("series") or [] for r in s.get("endpoint") or []]
            for ref in refs:
                if ref.startswith("Endpoint/") and ref not in seen:
                    seen.add(ref)
                    entries.append({"resource": await self.get(ref)})
        return {**bundle, "entry": entries}


def is_allowed(base_url: str, allowed: Sequence[str]) -> bool:
    """True when ``base_url`` equals or lies under an allow-listed FHIR base (http/https only).

    Raises ValueError when an allow-listed base is itself invalid (a configuration error).
    """
    return _policy(tuple(allowed)).is_allowed(base_url)


@functools.lru_cache(maxsize=32)
def _policy(allowed: tuple[str, ...]) -> UrlPolicy:
    # Called per hook and per Bundle page with the same few allow-lists: parse each list once.
    return UrlPolicy(allowed)
