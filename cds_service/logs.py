"""Structured logs: one JSON object per line, with the current trace and span ids, no patient data.

    configure_logging("INFO", "json")          the root logger → stderr, JSON lines
    uvicorn.run(RequestTimer(app), log_config=uvicorn_log_config("INFO", "json"))

Every line carries ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``message`` and, when the line is
written inside a valid OpenTelemetry span, ``trace_id`` (32 hex) and ``span_id`` (16 hex), so a log
line leads to its trace. Policy (the same as :func:`cds_service.errors.log_unexpected`):

* an exception is logged as its type (``exc_type``, plus ``exc_chain`` for its causes) and its
  frames (``stack``: ``file:line function``), never its message, which can quote the data that
  caused it (a UID, a name, a token);
* an access line (uvicorn's ``uvicorn.access`` logger) carries the method, a path reduced to the
  route's shape (``/cds-services/{id}``, ``/viewer/<redacted>``: viewer links carry a signed token),
  the status and the time to the response's start — never the query string, the client's address,
  the full URL or a header;
* a captured Python warning keeps its category and location, not its text;
* libraries that log request URLs (which hold study/series/instance UIDs) stay at WARNING.

Standard library only: the formatter is a few lines and needs no dependency.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["json", "text"]

#: These libraries log study/series/instance UIDs and request URLs at INFO/DEBUG.
QUIET_LOGGERS = ("dicomweb_client", "httpx", "httpcore", "alembic.runtime.plugins")

#: Extra record attributes a line may carry (set by this module's filters); any other ``extra=`` is
#: dropped, so a careless ``log.info(..., extra={"patient": ...})`` cannot leak through the formatter.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "http_version")

_ACCESS_MARK = "_hipcad_access"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Exceptions, without their messages ------------------------------------------------------------


def _short_path(filename: str) -> str:
    """A frame's file without the installation prefix (``…/site-packages/`` or the working folder)."""
    marker = f"{os.sep}site-packages{os.sep}"
    if marker in filename:
        return filename.split(marker, 1)[1]
    cwd = os.getcwd() + os.sep
    return filename[len(cwd) :] if filename.startswith(cwd) else filename


def exception_frames(exc: BaseException) -> list[str]:
    """The traceback of ``exc`` as ``file:line function`` strings (innermost last); no message, no locals."""
    return [f"{_short_path(f.filename)}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)]


def exception_type(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _exception_fields(exc: BaseException) -> dict[str, Any]:
    fields: dict[str, Any] = {"exc_type": exception_type(exc), "stack": exception_frames(exc)}
    chain, seen, cause = [], {id(exc)}, exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen and len(chain) < 8:
        seen.add(id(cause))
        chain.append(exception_type(cause))
        cause = cause.__cause__ or cause.__context__
    if chain:
        fields["exc_chain"] = chain
    return fields


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or the bare template when the arguments do not fit it.

    Never lets logging's ``handleError`` run: it prints the arguments (possibly patient data) to stderr.
    """
    try:
        return record.getMessage()
    except Exception:
        return f"{record.msg} [unformattable arguments]"


def _trace_fields() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


# Formatters ------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, trace_id/span_id, exc_type/stack."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        line.update(_trace_fields())
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info and record.exc_info[1] is not None:
            line.update(_exception_fields(record.exc_info[1]))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, under the same policy (exceptions without their messages)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.formatTime(record)} {record.levelname} {record.name}: {_message(record)}"
        ids = _trace_fields()
        if ids:
            text += f" [trace_id={ids['trace_id']} span_id={ids['span_id']}]"
        if record.exc_info and record.exc_info[1] is not None:
            fields = _exception_fields(record.exc_info[1])
            text += "\n" + fields["exc_type"] + "".join(f"\n  {frame}" for frame in fields["stack"])
        return text


def make_formatter(fmt: LogFormat | str = "json") -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {fmt!r} (json or text)")


# Access lines ----------------------------------------------------------------------------------

#: When the current request reached the app (set by :class:`RequestTimer`, read by the access filter).
_REQUEST_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar("hipcad_request_started", default=None)

_VIEWER_FILES = frozenset({"radiograph.png", "heat.png"})
_VIEWER_STATIC = frozenset({"viewer.js", "viewer.css"})
_FIXED_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/cds-services", "/docs", "/openapi.json"})
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_HTTP_VERSION = re.compile(r"\d(\.\d)?")


def redact_path(path: str) -> str:
    """The route shape of a request path: no query, no ids, no tokens.

    ``/cds-services/<anything>`` → ``/cds-services/{id}`` (``…/feedback`` kept), ``/viewer/<token>…`` →
    ``/viewer/<redacted>`` (``radiograph.png`` / ``heat.png`` kept), fixed paths as they are, anything
    else ``/<unmatched>``.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    if path in _FIXED_PATHS:
        return path
    segments = path.split("/")[1:]
    if len(segments) >= 2 and segments[0] == "cds-services":
        if len(segments) == 2:
            return "/cds-services/{id}"
        if len(segments) == 3 and segments[2] == "feedback":
            return "/cds-services/{id}/feedback"
        return "/cds-services/{id}/<unmatched>"
    if len(segments) >= 2 and segments[0] == "viewer":
        if len(segments) == 3 and segments[1] == "static" and segments[2] in _VIEWER_STATIC:
            return path
        if len(segments) == 3 and segments[2] in _VIEWER_FILES:
            return f"/viewer/<redacted>/{segments[2]}"
        return "/viewer/<redacted>"
    return "/<unmatched>"


class AccessLogFilter(logging.Filter):
    """Rewrites uvicorn's access record (client, method, full path + query, version, status) as
    ``METHOD /route-shape STATUS`` with ``method``, ``path``, ``status``, ``duration_ms`` fields.

    A record of another shape (a future uvicorn) keeps no argument at all: better a bare line than a URL.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _ACCESS_MARK, False):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        method = path = version = status = None
        if len(args) == 5:
            _client, raw_method, raw_path, raw_version, raw_status = args
            method = raw_method if raw_method in _HTTP_METHODS else "OTHER"
            path = redact_path(str(raw_path))
            version = raw_version if isinstance(raw_version, str) and _HTTP_VERSION.fullmatch(raw_version) else None
            status = raw_status if isinstance(raw_status, int) else None
        started = _REQUEST_STARTED.get()
        if method is not None and status is not None:
            record.msg, record.args = "%s %s %d", (method, path, status)
            record.method, record.path, record.status = method, path, status
            if version:
                record.http_version = version
        else:
            record.msg, record.args = "access (unrecognised record; details dropped)", None
        if started is not None:
            record.duration_ms = round((time.perf_counter() - started) * 1000, 1)
        setattr(record, _ACCESS_MARK, True)
        return True


class WarningsFilter(logging.Filter):
    """``py.warnings`` records (``logging.captureWarnings``) keep category and location, not the text."""

    _SHAPE = re.compile(r"^(?P<file>.*?):(?P<line>\d+): (?P<category>\w+): ", re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._SHAPE.match(_message(record))
        if match:
            where = f"{_short_path(match['file'])}:{match['line']}"
            record.msg, record.args = "%s at %s (text dropped)", (match["category"], where)
        else:
            record.msg, record.args = "a warning (text dropped)", None
        return True


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RequestTimer:
    """ASGI wrapper noting when each HTTP request reached the app, for the access line's ``duration_ms``
    (time to the response's start, when uvicorn writes the line). Everything else passes through."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http":
            _REQUEST_STARTED.set(time.perf_counter())
        await self.app(scope, receive, send)


# Configuration ---------------------------------------------------------------------------------


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


def configure_logging(level: str | int = "INFO", fmt: LogFormat | str = "json", stream: Any = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) through the JSON (or text) formatter.

    Replaces the console handlers already on the root logger (``logging.basicConfig``'s, an earlier
    call's) and leaves others alone (files, pytest's capture). Returns the new handler.
    """
    formatter = make_formatter(fmt)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_PyWarnings())
    root = logging.getLogger()
    for old in list(root.handlers):
        if type(old) is logging.StreamHandler:  # basicConfig's or ours; not subclasses (files, capture)
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level(level))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler


class _PyWarnings(logging.Filter):
    """On a handler: applies :class:`WarningsFilter` to ``py.warnings`` records only."""

    _warnings = WarningsFilter()

    def filter(self, record: logging.LogRecord) -> bool:
        return self._warnings.filter(record) if record.name == "py.warnings" else True


def uvicorn_log_config(level: str | int = "INFO", fmt: LogFormat | str = "json") -> dict[str, Any]:
    """``uvicorn.run(log_config=...)``: uvicorn's error and access loggers through the same formatter,
    the access lines through :class:`AccessLogFilter` (on the logger and on its handler)."""
    formatter = {"()": "cds_service.logs.JsonFormatter"} if fmt == "json" else {"()": "cds_service.logs.TextFormatter"}
    make_formatter(fmt)  # an unknown format fails here, not inside uvicorn
    name = logging.getLevelName(_level(level))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"access": {"()": "cds_service.logs.AccessLogFilter"}},
        "formatters": {"structured": formatter},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "structured", "stream": "ext://sys.stderr"},
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "filters": ["access"],
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": name, "propagate": False},
            "uvicorn.error": {"level": name},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "filters": ["access"], "propagate": False},
        },
    }
