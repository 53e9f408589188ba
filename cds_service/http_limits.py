"""HTTP hygiene at the edge: what a request may cost the service before any CDS Hooks code runs.

- **Body read timeout** (RFC 9110 §15.5.9, 408 Request Timeout): :func:`read_body` reads the whole
  body within ``timeout_s`` seconds in total, so a client whose ``Content-Length`` promises more
  than it sends (a slow-loris body) holds a connection for that long at most, never indefinitely.
- **Media type** (RFC 9110 §15.5.16, 415 Unsupported Media Type): CDS Hooks 2.0 § Use of JSON says
  all data are exchanged as JSON (RFC 8259), so hook and feedback bodies must be labelled
  ``application/json`` (or an ``application/*+json`` type, RFC 6839 §3.1).
- **Header size** (RFC 6585 §5, 431 Request Header Fields Too Large) and **connection deadlines**:
  :class:`BoundedH11Protocol` refuses a request head larger than uvicorn's
  ``h11_max_incomplete_event_size`` with a 431 OperationOutcome, answers a head still incomplete
  after the read timeout with a 408, and closes a connection still sending a body nobody reads; an
  error answer is followed by a lingering close (half-close, discard what the client still sends for
  a short while), so the client reads it instead of a TCP reset (uvicorn answers 400 and resets).
- **Clients that went away** (:data:`CLIENT_GONE`): Starlette's ``ClientDisconnect`` is not an error
  of the service; the app logs one INFO line for it, without a traceback.

Messages name the bound, never request data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import h11
from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from cds_service.errors import BadRequestError, CdsServiceError, PayloadTooLargeError, operation_outcome_json

log = logging.getLogger(__name__)

#: The exception Starlette raises when the client disconnects before its body was read.
CLIENT_GONE = ClientDisconnect

#: h11's default bound on an incomplete event (the request head), bytes.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024

#: h11 accepts a bare LF as a line ending: a head ends at LF (CR) LF.
_END_OF_HEAD = re.compile(rb"\n\r?\n")


class RequestTimeoutError(CdsServiceError):
    """The request body did not arrive within the body read timeout (HTTP 408, OperationOutcome ``timeout``)."""


class UnsupportedMediaTypeError(CdsServiceError):
    """The request body is not labelled JSON (HTTP 415, OperationOutcome ``not-supported``)."""


def is_json_media_type(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/*+json`` (RFC 8259 §11, RFC 6839 §3.1),
    parameters (``; charset=utf-8``) ignored, case-insensitive (RFC 9110 §8.3.1)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, *, max_bytes: int, timeout_s: float) -> bytes:
    """The JSON body of ``request``: refused with 415 unless labelled JSON, 413 as soon as it exceeds
    ``max_bytes`` (while streaming: a missing or lying Content-Length changes nothing), 408 unless
    it has all arrived within ``timeout_s`` seconds. ``ClientDisconnect`` propagates (nobody to answer)."""
    if not is_json_media_type(request.headers.get("content-type")):
        raise UnsupportedMediaTypeError("request body must be JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequestError("invalid Content-Length header")
        if int(declared) > max_bytes:
            raise PayloadTooLargeError(f"request body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLargeError(f"request body larger than {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(f"request body not received within {timeout_s:g} s") from None
    return b"".join(chunks)


def _status_response(status: int, reason: str, diagnostics: str) -> bytes:
    """A complete HTTP/1.1 response with an OperationOutcome body and ``Connection: close``."""
    body = json.dumps(operation_outcome_json(status, diagnostics)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/fhir+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with bounds on what a client may hold open (use :func:`bounded_protocol`).

    - **Head size**: a request head larger than the server's ``h11_max_incomplete_event_size``
      (``HIPCAD_MAX_HEADER_BYTES``) is answered 431. It is checked here, before h11 sees the bytes,
      because h11 only enforces it on an *incomplete* head: a 200 kB head arriving in one read would
      be accepted, a larger one answered 400 and reset.
    - **Head time**: a connection must deliver a complete request head within :attr:`read_timeout_s`
      of opening or of its previous response (a slow-loris head); a partial head is answered 408,
      a connection that sent nothing is closed. uvicorn arms no timer before the first request and
      drops its keep-alive timer as soon as any byte arrives.
    - **Unread bodies**: a body the app answered without reading (a 401, a GET with a body) must
      finish arriving within :attr:`read_timeout_s` of the response, or the connection is closed.
      The body an endpoint does read is bounded by :func:`read_body` (408).

    An error answer half-closes the connection and discards what the client still sends for up to
    :attr:`linger_s` seconds (a lingering close), so the client reads the answer, not a TCP reset.
    """

    #: Seconds a client has to send a request head, or the rest of a body nobody reads.
    read_timeout_s = 10.0
    #: How long a refused connection keeps reading (and discarding) before it is closed, seconds.
    linger_s = 2.0

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering close: what the client still sends is read and dropped
            return
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"request header fields larger than {self.max_header_bytes} bytes",
            )
            return
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._deadline, self._linger):
            if timer is not None:
                timer.cancel()
        self._deadline = self._linger = None
        super().connection_lost(exc)

    def _waiting_for_client(self) -> bool:
        """No request head yet in this cycle, or a response sent while its request body is still due."""
        ours, theirs = self.conn.our_state, self.conn.their_state
        return (ours is h11.IDLE and theirs is h11.IDLE) or (ours is h11.DONE and theirs is h11.SEND_BODY)

    def _watch(self) -> None:
        """Arm the read deadline while the connection waits on the client (arriving bytes do not
        extend it: that is what a slow-loris relies on); disarm it once the app has the request."""
        if self._refused or self.transport.is_closing() or not self._waiting_for_client():
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _read_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or not self._waiting_for_client():
            return
        if self.conn.our_state is h11.IDLE and self.conn.trailing_data[0]:
            log.info("408: request head not received within %g s", self.read_timeout_s)
            self._refuse(408, "Request Timeout", f"request head not received within {self.read_timeout_s:g} s")
        else:  # nothing of a request was sent, or the answer went out long ago: just close
            if self.conn.our_state is h11.DONE:
                log.info("connection closed: request body not received within %g s", self.read_timeout_s)
            self.transport.close()

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the request head being received (h11's buffer, then ``data``) exceeds the bound."""
        buffered = self.conn.trailing_data[0]  # while IDLE: at most an incomplete head, so small
        if len(buffered) + len(data) <= self.max_header_bytes:
            return False
        pending = buffered + data
        end = _END_OF_HEAD.search(pending)
        return (end.end() if end else len(pending)) > self.max_header_bytes

    def _refuse(self, status: int, reason: str, diagnostics: str) -> None:
        """Answer ``status`` outside h11 (no request was parsed), then close the connection lingering."""
        self._refused = True
        self._unset_keepalive_if_required()
        self._watch()
        if status == 431:
            log.warning("431: %s", diagnostics)
        self.transport.write(_status_response(status, reason, diagnostics))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer is flushed first; reading goes on until EOF or linger_s
        self._linger = self.loop.call_later(self.linger_s, self.transport.close)


def bounded_protocol(read_timeout_s: float) -> type[BoundedH11Protocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with this read deadline (``HIPCAD_BODY_READ_TIMEOUT_S``)."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"read_timeout_s": read_timeout_s})
