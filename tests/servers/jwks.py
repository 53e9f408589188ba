"""A JWKS server on 127.0.0.1 (CDS Hooks § Trusting CDS Clients: the EHR publishes its keys at a JWKS
URL and rotates them), whose documents a test can change and whose requests it counts."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any


class JwksServer:
    """Serves ``documents[path]`` (JSON), 404 for a path without one, or ``status`` for every path
    when it is not 200; ``hits`` counts the requests per path."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.status = 200
        self.hits: Counter[str] = Counter()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] += 1
                if outer.status != 200 or self.path not in outer.documents:
                    self.send_response(outer.status if outer.status != 200 else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(outer.documents[self.path]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server (``path`` starts with ``/``)."""
        return self.base + path


@contextlib.contextmanager
def jwks_server_running() -> Iterator[JwksServer]:
    """A :class:`JwksServer` on a free loopback port, shut down on exit."""
    server = JwksServer()
    try:
        yield server
    finally:
        server.server.shutdown()
