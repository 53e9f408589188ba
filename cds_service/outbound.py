"""One outbound URL policy for every client the service opens (FHIR, DICOMweb, the folder store).

Why: the hook request chooses the URLs we fetch (``fhirServer``, a Bundle's ``next`` link, an
ImagingStudy Endpoint's address). Without a strict allow-list any caller could make the service
fetch internal addresses or read arbitrary folders (SSRF). String-prefix checks on raw URLs are
not enough: ``file:///store/../etc``, ``https://ehr@evil``, ``https://h/dicom-web-evil`` and
``%2e%2e`` all pass them. So URLs are parsed with :func:`urllib.parse.urlsplit`, anything
ambiguous is refused, the rest is normalised (scheme and host case, default port, trailing dot,
IDNA) and compared with the allow-listed bases segment by segment. ``file:`` URLs are resolved
(symlinks included) and must stay inside one configured local folder.

Traversal is refused, never resolved: ``..`` and ``.`` (RFC 3986 §5.2.4 would remove them, and so
do httpx and urllib3), their percent-encoded forms, ``..;`` (servlet containers drop a segment's
``;`` parameters and then see ``..``) and double-encoded ``%252e%252e`` (a proxy or server that
decodes twice sees ``..``). Hosts are normalised exactly as the HTTP clients do (httpx and
urllib3 use IDNA 2008, requests UTS #46, all through the ``idna`` package), a host on which they
disagree or which one of them cannot parse is refused, and the result is cross-checked with the
clients' own URL parsers: the policy compares the host the request will go to, not a look-alike.

Error messages never contain the URL: URLs can carry patient identifiers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
import idna
import requests

DEFAULT_PORTS = {"http": 80, "https": 443}
#: Characters a path segment may keep unescaped in the canonical form (RFC 3986 pchar).
_PCHAR_SAFE = "!$&'()*+,;=:@-._~"
#: Encoded ``/`` and ``\\``: a server may decode them into separators after our check.
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
#: Refused anywhere in the raw URL; control characters also once a segment is decoded.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: A percent-escape left after decoding once: double encoding (``%252e`` → ``%2e`` → ``.``).
_PERCENT_ESCAPE = re.compile(r"%[0-9a-f]{2}", re.IGNORECASE)
#: An ASCII host name (RFC 3986 reg-name restricted to what DNS names use; ``_`` for SRV-style names).
_ASCII_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
#: Looks like a dotted IPv4 address: must then be one (httpx refuses ``999.1.1.1``, DNS would not).
_IPV4_LIKE = re.compile(r"[0-9]+(\.[0-9]+){3}")


class DisallowedUrlError(ValueError):
    """A URL the policy refuses; the message says why and never contains the URL."""


@dataclass(frozen=True)
class AllowedBase:
    """A normalised location: scheme, host, port and decoded path segments.

    Used both for the allow-listed bases and for the URLs checked against them. For ``file`` the
    host is empty, the port ``None`` and the segments are those of the resolved folder.
    """

    scheme: str
    host: str
    port: int | None
    segments: tuple[str, ...]

    @property
    def url(self) -> str:
        """The canonical string: lower-case scheme and host, default port left out, no trailing slash."""
        path = "/" + "/".join(quote(s, safe=_PCHAR_SAFE) for s in self.segments)
        if self.scheme == "file":
            return f"file://{path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{host}{port}{path if self.segments else ''}"

    @property
    def folder(self) -> Path | None:
        """The resolved folder of a ``file`` location, else ``None``."""
        return Path("/", *self.segments) if self.scheme == "file" else None

    def contains(self, other: AllowedBase) -> bool:
        """True when ``other`` is this location or lies under it (segment-wise, not by string prefix)."""
        same_origin = (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)
        return same_origin and other.segments[: len(self.segments)] == self.segments


def _segments(path: str) -> tuple[str, ...]:
    """Decoded path segments; refuses dot segments (raw or encoded), encoded separators and empty segments."""
    raw = path.split("/")[1:] if path.startswith("/") else ([path] if path else [])
    while raw and raw[-1] == "":  # trailing slashes are spelling, not location
        raw.pop()
    decoded = []
    for segment in raw:
        if _ENCODED_SEPARATOR.search(segment):
            raise DisallowedUrlError("encoded path separator not allowed")
        try:
            value = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise DisallowedUrlError("invalid percent-encoding") from None
        if _is_dot_segment(value):
            raise DisallowedUrlError("path traversal")
        if _PERCENT_ESCAPE.search(value):
            raise DisallowedUrlError("double percent-encoding not allowed")
        if value == "":
            raise DisallowedUrlError("empty path segment not allowed")
        if _CONTROL.search(value):  # e.g. %00; a decoded space is a legitimate folder name
            raise DisallowedUrlError("control character in path")
        decoded.append(value)
    return tuple(decoded)


def _is_dot_segment(value: str) -> bool:
    """``.``/``..`` (RFC 3986 §3.3), also with ``;`` parameters or trailing blanks some servers strip."""
    name = value.split(";", 1)[0].rstrip(" \t")
    return name != "" and set(name) == {"."}


def _host(hostname: str | None) -> str:
    """Lower-case, trailing dot stripped, internationalised names in their ASCII form (IDNA 2008).

    The same ``idna`` calls the clients make: httpx ``idna.encode(host.lower())``, urllib3 the same
    with ``std3_rules``, requests ``uts46=True`` (which maps full-width digits and letters to ASCII,
    where IDNA 2008 refuses them). Unless all three give one name the host is refused: which server
    is contacted would depend on the client. IDNA 2003 (Python's ``idna`` codec) is not used: it maps
    ``ß`` to ``ss`` where the clients keep it (``xn--strae-oqa``), a different host.
    """
    host = (hostname or "").rstrip(".").lower()
    if not host:
        raise DisallowedUrlError("empty host")
    if "%" in host or _CONTROL_OR_SPACE.search(host):
        raise DisallowedUrlError("invalid host")
    if not host.isascii():
        try:
            names = {
                idna.encode(host).decode("ascii"),
                idna.encode(host, strict=True, std3_rules=True).decode("ascii"),
                idna.encode(host, uts46=True).decode("ascii"),
            }
        except (idna.IDNAError, UnicodeError):
            raise DisallowedUrlError("invalid internationalised host") from None
        if len(names) != 1:
            raise DisallowedUrlError("ambiguous internationalised host")
        host = names.pop()
    if ":" in host:  # urlsplit gives IPv6 literals without their brackets
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise DisallowedUrlError("invalid host") from None
    if not _ASCII_HOST.fullmatch(host):
        raise DisallowedUrlError("invalid host")
    if _IPV4_LIKE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise DisallowedUrlError("invalid host") from None
    return host


def _client_hosts(url: str) -> set[str]:
    """The hosts httpx (FHIR) and requests (DICOMweb) would connect to for ``url``; raises DisallowedUrlError."""
    try:
        via_httpx = httpx.URL(url).raw_host.decode("ascii")
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        via_requests = urlsplit(prepared.url or "").hostname or ""
    except (httpx.InvalidURL, requests.exceptions.RequestException, UnicodeError, ValueError):
        raise DisallowedUrlError("host the HTTP client cannot parse") from None
    hosts = {host.rstrip(".").lower() for host in (via_httpx, via_requests)}
    try:
        return {str(ipaddress.IPv6Address(host)) if ":" in host else host for host in hosts}
    except ValueError:
        raise DisallowedUrlError("host the HTTP client cannot parse") from None


def parse(url: str, local_folder: Path | None = None) -> tuple[AllowedBase, str]:
    """Parse and normalise ``url`` into its location and query; raises DisallowedUrlError.

    ``file`` URLs are only accepted when ``local_folder`` is set and they resolve inside it.
    """
    if _CONTROL_OR_SPACE.search(url):
        raise DisallowedUrlError("control character, space or backslash in URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DisallowedUrlError("malformed URL") from None
    if "#" in url:
        raise DisallowedUrlError("fragment not allowed")
    if "@" in parts.netloc:
        raise DisallowedUrlError("userinfo not allowed")
    scheme = parts.scheme.lower()
    segments = _segments(parts.path)
    if scheme in DEFAULT_PORTS:
        if port == 0:
            raise DisallowedUrlError("invalid port")
        location = AllowedBase(scheme, _host(parts.hostname), port or DEFAULT_PORTS[scheme], segments)
        if _client_hosts(url) != {location.host}:
            raise DisallowedUrlError("the HTTP client would contact another host")
        return location, parts.query
    if scheme == "file" and local_folder is not None:
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query:
            raise DisallowedUrlError("file URL must be a local path")
        resolved = Path("/", *segments).resolve()  # follows symlinks: a link out of the folder is refused
        if not resolved.is_relative_to(local_folder.resolve()):
            raise DisallowedUrlError("file URL outside the local folder")
        return AllowedBase("file", "", None, resolved.parts[1:]), ""
    raise DisallowedUrlError("scheme not allowed")


class UrlPolicy:
    """Which URLs the service may contact: those under an allow-listed base.

    A base that is itself invalid (userinfo, traversal, a ``file`` base outside ``local_folder``…)
    is a configuration error and raises ValueError here rather than being silently dropped.
    """

    def __init__(self, allowed_bases: Sequence[str], local_folder: Path | None = None) -> None:
        self.local_folder = local_folder.resolve() if local_folder is not None else None
        bases = []
        for index, base in enumerate(allowed_bases):
            try:
                location, query = parse(base, self.local_folder)
            except DisallowedUrlError as exc:
                raise ValueError(f"allow-listed base #{index}: {exc}") from None
            if query:
                raise ValueError(f"allow-listed base #{index}: query not allowed")
            bases.append(location)
        # Most specific first, so that a nested base (with its own credentials) wins.
        self.bases: tuple[AllowedBase, ...] = tuple(sorted(bases, key=lambda b: -len(b.segments)))

    def locate(self, url: str) -> tuple[AllowedBase, AllowedBase, str]:
        """The allow-listed base of ``url``, its normalised location and its query; raises DisallowedUrlError."""
        location, query = parse(url, self.local_folder)
        base = next((b for b in self.bases if b.contains(location)), None)
        if base is None:
            raise DisallowedUrlError("not under an allow-listed base")
        return base, location, query

    def match(self, url: str) -> AllowedBase:
        """The allow-listed base ``url`` lies under; raises DisallowedUrlError."""
        return self.locate(url)[0]

    def is_allowed(self, url: str) -> bool:
        """True when ``url`` may be contacted."""
        try:
            self.match(url)
        except DisallowedUrlError:
            return False
        return True
