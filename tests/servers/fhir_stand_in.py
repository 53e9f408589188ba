"""A misbehaving FHIR server, for the "FHIR server slow or answering 500" fault tests only.

A real FHIR server (``tests/servers/fhir.py``) cannot be told to fail on cue; this stand-in answers
every GET the way it is told to: with an error status, after a delay, or by trickling a valid
searchset Bundle a few bytes at a time (each read arriving well within a per-read timeout).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

EMPTY_SEARCHSET = json.dumps({"resourceType": "Bundle", "type": "searchset", "total": 0}).encode()


@dataclass
class SlowFhirStandIn:
    """Answers every GET with ``status`` after ``delay_s``; the body comes ``chunk`` bytes every ``trickle_s``."""

    status: int = 200
    delay_s: float = 0.0
    trickle_s: float = 0.0
    chunk: int = 4
    body: bytes = EMPTY_SEARCHSET
    hits: list[str] = field(default_factory=list)
    url: str = ""

    @contextlib.contextmanager
    def running(self) -> Iterator[SlowFhirStandIn]:
        """Serve on a free loopback port (``url`` is its FHIR base) until the block ends."""
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.hits.append(self.path)
                time.sleep(stand_in.delay_s)
                with contextlib.suppress(OSError):  # the service gave up and closed the connection
                    self.send_response(stand_in.status)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(stand_in.body)))
                    self.end_headers()
                    body = stand_in.body
                    step = stand_in.chunk if stand_in.trickle_s else max(1, len(body))
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start : start + step])
                        self.wfile.flush()
                        time.sleep(stand_in.trickle_s)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.block_on_close = False  # a handler still sleeping or trickling does not hold the test up
        self.url = f"http://127.0.0.1:{server.server_port}/fhir"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
