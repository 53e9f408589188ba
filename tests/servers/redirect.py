"""A server that answers every GET with 302 to a second local server: for "redirects are not followed" tests."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def redirecting_server(
    path: str, body: bytes = b"", content_type: str = "application/octet-stream"
) -> Iterator[tuple[str, list[str]]]:
    """Yields the redirecting server's URL (``http://127.0.0.1:<port><path>``) and the target's hits.

    The target answers 200 with ``body``; every path it is asked for lands in the hits list, so a
    test can prove the redirect was never followed (an empty list).
    """
    hits: list[str] = []

    class Target(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)

    class Redirect(Target):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{target.server_port}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    source = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for server in (target, source):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{source.server_port}{path}", hits
    finally:
        for server in (target, source):
            server.shutdown()
            server.server_close()
