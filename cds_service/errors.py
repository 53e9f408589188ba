"""Every exception the service raises on purpose, in one place.

The web layer (``cds_service.app``) maps them to CDS Hooks / HTTP answers. Messages are written to
be logged: they never contain patient data (names, identifiers, UIDs) or tokens.
"""

from __future__ import annotations

import logging
import traceback


class CdsServiceError(Exception):
    """Base class of the service's own errors.

    ``reason_code`` is the short code a failure card shows (``cds_service.cdshooks.cards.unavailable_card``);
    the message itself goes to the log only.
    """

    reason_code = "internal-error"


class BadRequestError(CdsServiceError):
    """The hook request is malformed (HTTP 400, OperationOutcome body)."""


class PayloadTooLargeError(CdsServiceError):
    """The request body is larger than ``max_request_bytes`` (HTTP 413, OperationOutcome ``too-long``)."""


class AuthenticationError(CdsServiceError):
    """The bearer JWT is missing or invalid (bare HTTP 401)."""


class PrefetchUnavailableError(CdsServiceError):
    """Data the service needs is neither prefetched nor fetchable (HTTP 412, per CDS Hooks 2.0)."""


class StudyUnavailableError(CdsServiceError):
    """The imaging study could not be found or retrieved; the hook still answers, with a card saying so."""

    reason_code = "images-unavailable"


class UnusableImageError(CdsServiceError):
    """A DICOM object cannot be analysed (not an image, colour, corrupt, too small…)."""

    reason_code = "image-not-analysable"


class InferenceError(CdsServiceError):
    """The inference server is unreachable, timed out, or answered unexpectedly."""

    reason_code = "models-unavailable"


#: FHIR ``IssueType`` code (http://hl7.org/fhir/valueset-issue-type.html) of each HTTP error status.
ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    408: "timeout",
    412: "not-found",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    431: "too-long",
    500: "exception",
    503: "transient",
}


def operation_outcome_json(status: int, diagnostics: str, code: str | None = None) -> dict[str, object]:
    """The FHIR OperationOutcome of a non-2xx answer (CDS Hooks 3.0 ballot § Returning OperationOutcome:
    services SHOULD answer errors with one; a 2.0 client reads the HTTP status and ignores the body).

    ``code`` defaults to :data:`ISSUE_CODES` for ``status``; ``diagnostics`` must already be free of
    patient data and tokens (see the module docstring).
    """
    issue_code = code or ISSUE_CODES.get(status, "exception" if status >= 500 else "processing")
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": issue_code, "diagnostics": diagnostics}],
    }


def log_unexpected(log: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an unexpected exception in full — type and every frame — but not its message.

    Exception messages can quote the data that caused them (a UID, a name, a token); the frames
    (file, line, function, source line) are enough to find the bug, and carry no request data.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected error while %s: %s\n%s", what, type(exc).__name__, frames.rstrip())
