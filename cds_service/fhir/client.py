"""A small async FHIR R4 REST client (httpx) for the EHR's ``fhirServer``, with its bearer token.

Only allow-listed bases are contacted: the hook request chooses ``fhirServer``, so an open client
would let any caller make the service fetch arbitrary URLs (SSRF). The check is the shared
:class:`cds_service.outbound.UrlPolicy`; redirects are never followed (a 3xx could leave the
allow-list). The token is never logged.

Every request this client sends is checked again, under this client's own base: references
(``Endpoint/<id>``, FHIR R4 §2.4 "Resource References", relative to the service base) and a
Bundle's ``next`` link are resolved against ``fhirServer`` and must stay under it, so the
``fhirAuthorization`` token (CDS Hooks 2.0 §"FHIR Resource Access") goes to that FHIR server only.
Resolution never removes dot segments as RFC 3986 §5.2.4 would (``Endpoint/../../x`` would become
``/x`` on the same host, outside the base): the policy refuses them. What is sent is the policy's
canonical URL, the one that was checked. A refusal is a :class:`PrefetchUnavailableError` (HTTP 412),
the answer every other outbound refusal gets.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from cds_service.errors import PrefetchUnavailableError
from cds_service.outbound import DisallowedUrlError, UrlPolicy


class FhirClient:
    """Search and read on one FHIR server with one access token."""

    def __init__(self, base_url: str, access_token: str | None, timeout_s: float = 5.0) -> None:
        try:
            self._policy = UrlPolicy([base_url])
        except ValueError as exc:  # the reason only: the URL may carry identifiers
            reason = str(exc).removeprefix("allow-listed base #0: ")
            raise PrefetchUnavailableError(f"the FHIR server's address is refused ({reason})") from None
        self.base_url = self._policy.bases[0].url
        self._headers = {"Accept": "application/fhir+json"}
        if access_token:  # an open FHIR server (e.g. a public sandbox) needs none
            self._headers["Authorization"] = f"Bearer {access_token}"
        self.timeout_s = timeout_s

    def resolve(self, reference: str) -> str:
        """The canonical absolute URL of ``reference`` (absolute or relative to the base) if it lies under the base.

        Raises :class:`DisallowedUrlError` (traversal, another host or base, a host the HTTP client
        would read differently…). The message never contains the URL.
        """
        if urlsplit(reference).scheme:
            url = reference
        elif reference.startswith("//"):  # a network-path reference: another host, same scheme
            url = f"{urlsplit(self.base_url).scheme}:{reference}"
        elif reference.startswith("/"):  # an absolute-path reference: same origin, any path
            parts = urlsplit(self.base_url)
            url = f"{parts.scheme}://{parts.netloc}{reference}"
        else:
            url = f"{self.base_url}/{reference}"
        _, location, query = self._policy.locate(url)
        return f"{location.url}?{query}" if query else location.url

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET ``path`` relative to the base (search or read); raises PrefetchUnavailableError."""
        return await self.get_url(path, params)

    async def get_url(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET a URL under the base (e.g. a Bundle's ``next`` link), within ``timeout_s`` in all."""
        try:
            url = self.resolve(url)
        except DisallowedUrlError as exc:
            raise PrefetchUnavailableError(f"FHIR request refused by the outbound URL policy ({exc})") from None
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
        except httpx.InvalidURL:  # the policy checks with httpx's parser: a disagreement is still a refusal
            raise PrefetchUnavailableError("FHIR request refused by the outbound URL policy (invalid URL)") from None
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
