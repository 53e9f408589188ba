"""Where the EHR's authorization server is: ``{iss}/.well-known/smart-configuration``.

SMART App Launch 2.0 § Conformance ("FHIR Authorization Endpoint and Capabilities Discovery using a
Well-Known Uniform Resource Identifiers"): the app reads ``authorization_endpoint`` and
``token_endpoint`` (REQUIRED) and ``code_challenge_methods_supported`` (servers SHALL list ``S256``)
from the FHIR base the EHR named as ``iss``.

``iss`` is chosen by whoever opens the launch URL, so it is checked against the FHIR allow-list
(:mod:`cds_service.outbound`) **before** anything is fetched; the token endpoint, which receives the
code and the client's credentials, must share the FHIR server's origin or be allow-listed itself.
Redirects are never followed. Error messages never contain a URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from cds_service.outbound import DisallowedUrlError, UrlPolicy, parse

WELL_KNOWN = "/.well-known/smart-configuration"
#: A smart-configuration document is a few kilobytes; anything much larger is refused.
MAX_DOCUMENT_BYTES = 256_000


class LaunchRefused(Exception):
    """A launch this service will not continue; the message is shown to the user (no URL, no patient data)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SmartConfiguration:
    """What the app needs from ``.well-known/smart-configuration`` (SMART App Launch 2.0 § 2.0.2)."""

    iss: str
    authorization_endpoint: str
    token_endpoint: str
    code_challenge_methods_supported: tuple[str, ...]
    capabilities: tuple[str, ...]


def canonical_iss(iss: str, fhir_allowed_bases: Sequence[str]) -> str:
    """``iss`` normalised, when it lies under an allow-listed FHIR base; raises :class:`LaunchRefused` (403)."""
    try:
        _, location, query = UrlPolicy(list(fhir_allowed_bases)).locate(iss)
    except (DisallowedUrlError, ValueError):
        raise LaunchRefused("This EHR's FHIR server is not one this service is configured to use.", 403) from None
    if query:
        raise LaunchRefused("The EHR's FHIR server address is not valid.", 400)
    return location.url


def _same_origin(url: str, iss: str) -> bool:
    try:
        a, b = parse(url)[0], parse(iss)[0]
    except DisallowedUrlError:
        return False
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _endpoint(document: dict, name: str, iss: str, auth_allowed_bases: Sequence[str]) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise LaunchRefused("The EHR's SMART configuration has no usable authorization endpoints.", 502)
    try:
        parse(value)
    except DisallowedUrlError:
        raise LaunchRefused("The EHR's SMART configuration names an invalid endpoint.", 502) from None
    if not (_same_origin(value, iss) or UrlPolicy(list(auth_allowed_bases)).is_allowed(value)):
        raise LaunchRefused("The EHR's authorization server is not one this service is configured to use.", 403)
    return value


async def fetch_configuration(
    iss: str, auth_allowed_bases: Sequence[str] = (), timeout_s: float = 5.0
) -> SmartConfiguration:
    """Read and check ``{iss}/.well-known/smart-configuration``; ``iss`` must already be allow-listed
    (:func:`canonical_iss`). Raises :class:`LaunchRefused` (502 when the server fails, 403 for endpoints
    outside the allow-list, 400 when PKCE S256 is not offered)."""
    try:
        async with (
            asyncio.timeout(timeout_s),
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client,
        ):
            response = await client.get(iss + WELL_KNOWN, headers={"Accept": "application/json"})
    except (TimeoutError, httpx.HTTPError):
        raise LaunchRefused("The EHR's SMART configuration could not be read.", 502) from None
    if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
        raise LaunchRefused("The EHR's SMART configuration could not be read.", 502)
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise LaunchRefused("The EHR's SMART configuration is not valid JSON.", 502)
    methods = document.get("code_challenge_methods_supported")
    methods = tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list) else ()
    # SMART 2.0 servers SHALL list S256; a server listing only weaker methods would let PKCE be downgraded.
    if methods and "S256" not in methods:
        raise LaunchRefused("The EHR's authorization server does not support PKCE with S256.", 400)
    capabilities = document.get("capabilities")
    return SmartConfiguration(
        iss=iss,
        authorization_endpoint=_endpoint(document, "authorization_endpoint", iss, auth_allowed_bases),
        token_endpoint=_endpoint(document, "token_endpoint", iss, auth_allowed_bases),
        code_challenge_methods_supported=methods,
        capabilities=tuple(c for c in capabilities if isinstance(c, str)) if isinstance(capabilities, list) else (),
    )
