"""A decoy HTTP server on 127.0.0.1 that records every request it gets: for "no request leaves the allow-list".

It is at once a tiny FHIR/DICOMweb server (it answers the resources a test gives it) and a forward
proxy target: a client told to use it as ``HTTP_PROXY`` sends it every request in absolute form
(RFC 9112 §3.2.2), whatever the host, so requests for host names that do not resolve (``xn--strae-
oqa.test``) are seen too. Each hit keeps the host it was for (the decoy's own address for a
direct request) and the raw path as sent.

Whether a hit is "inside" a base is judged the way a lenient server would serve it, not by string
prefix: the path is percent-decoded until stable (a server or proxy that decodes twice), ``;``
parameters are dropped from each segment (servlet containers) and dot segments are removed
(RFC 3986 §5.2.4). ``/fhir/..;/admin`` and ``/fhir/%252e%252e/admin`` are both ``/admin``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit


def effective_path(raw_path: str) -> str:
    """The path a lenient server would serve for ``raw_path`` (query dropped)."""
    path = raw_path.split("?", 1)[0]
    for _ in range(5):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    served: list[str] = []
    for segment in path.split("/")[1:]:
        name = segment.split(";", 1)[0]
        if name == "..":
            if served:
                served.pop()
        elif name not in (".", ""):
            served.append(name)
    return "/" + "/".join(served)


@dataclass(frozen=True)
class Hit:
    """One request the decoy got: the ``host[:port]`` it was for, its raw path and whether it carried a token."""

    host: str
    path: str
    authorization: bool

    def under(self, base: str) -> bool:
        """True when a lenient server would serve this hit from under ``base`` (``http://host[:port]/path``)."""
        parts = urlsplit(base)
        prefix = parts.path.rstrip("/")
        served = effective_path(self.path)
        return self.host.lower() == parts.netloc.lower() and (served == prefix or served.startswith(prefix + "/"))


@dataclass
class Decoy:
    """The running decoy: its URL, the hits so far and the resources it serves (by effective path)."""

    url: str
    hits: list[Hit] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def outside(self, allowed: Sequence[str]) -> list[Hit]:
        """The hits a lenient server would serve from outside every base of ``allowed``."""
        return [hit for hit in list(self.hits) if not any(hit.under(base) for base in allowed)]


@contextlib.contextmanager
def decoy_server() -> Iterator[Decoy]:
    """Start the decoy on a free loopback port; every GET is recorded, then answered 200 or 404."""
    decoy = Decoy(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith(("http://", "https://")):  # absolute form: we are someone's proxy
                target = urlsplit(self.path)
                host, path = target.netloc, target.path + (f"?{target.query}" if target.query else "")
            else:  # the connection came to us: our own address (a client may send any Host header)
                host, path = urlsplit(decoy.url).netloc, self.path
            decoy.hits.append(Hit(host, path, "Authorization" in self.headers))
            resource = decoy.resources.get(effective_path(path))
            status = 200 if resource is not None else 404
            body = json.dumps(resource or {"resourceType": "OperationOutcome", "issue": []}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    decoy.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield decoy
    finally:
        server.shutdown()
        server.server_close()
