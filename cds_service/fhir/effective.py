"""When the report is about: ``DiagnosticReport.effective[x]`` from DICOM local times, as FHIR instants.

DICOM dates and times (DA ``YYYYMMDD``, TM ``HHMMSS.FFFFFF``, PS3.5 6.2) are local to the modality.
Their offset from UTC is Timezone Offset From UTC (0008,0201, ``&ZZXX``, PS3.3 C.12.1.1.8) when the
header has it; otherwise the site's zone (``HIPCAD_LOCAL_TIMEZONE``, an IANA name) says it. A FHIR
``dateTime`` with a time SHALL carry a zone (http://hl7.org/fhir/R4/datatypes.html#dateTime), so a
local time is never written with ``Z`` unless it is UTC.

US Core DiagnosticReport for Report and Note (us-core-10): ``effective[x]`` SHALL be present for a
preliminary report. :func:`effective_date_time` always gives one, never after ``issued``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: FHIR dateTime (http://hl7.org/fhir/R4/datatypes.html#dateTime), with the time's zone optional here:
#: ImagingStudy.started built from DICOM often has none (invalid FHIR, but what EHRs send).
_FHIR_DATETIME = re.compile(
    r"(?P<date>[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?)"
    r"(T(?P<time>([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?)"
    r"(?P<zone>Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?"
)
_DICOM_DATE = re.compile(r"([0-9]{4})(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])")
_DICOM_TIME = re.compile(r"([01][0-9]|2[0-3])([0-5][0-9])?([0-5][0-9]|60)?(\.[0-9]{1,6})?")
_DICOM_OFFSET = re.compile(r"([+-])(0[0-9]|1[0-4])([0-5][0-9])")


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``HIPCAD_LOCAL_TIMEZONE``). Raises ValueError for an unknown name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


def dicom_offset(value: str | None) -> tzinfo | None:
    """Timezone Offset From UTC (0008,0201) ``+HHMM`` / ``-HHMM`` as a fixed zone, or None."""
    match = _DICOM_OFFSET.fullmatch((value or "").strip())
    if not match:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta)


def dicom_instant(date: str | None, time: str | None, offset: str | None, local_zone: str = "UTC") -> datetime | None:
    """A DICOM DA + TM as an aware instant: in the header's Timezone Offset From UTC (0008,0201) when
    given, else in ``local_zone``. None without a valid date and time (a date alone is no instant)."""
    day = _DICOM_DATE.fullmatch((date or "").strip())
    clock = _DICOM_TIME.fullmatch((time or "").strip())
    if not day or not clock:
        return None
    hours, minutes, seconds, fraction = clock.groups()
    naive = datetime(
        *(int(part) for part in day.groups()),
        int(hours),
        int(minutes or 0),
        min(int(seconds or 0), 59),  # a leap second (60) is recorded as :59
        int((fraction or ".0")[1:].ljust(6, "0")),
    )
    return naive.replace(tzinfo=dicom_offset(offset) or zone(local_zone))


def parse_fhir_date_time(value: str | None, local_zone: str = "UTC") -> datetime | str | None:
    """``value`` (an ImagingStudy.started) as an aware instant; a date alone as the FHIR date string
    (``2026``, ``2026-11``, ``2026-11-23``; DICOM ``20261123`` too); None when it is no date.

    A time without a zone is a DICOM local time copied without its offset: it is read in
    ``local_zone``, never taken as UTC.
    """
    text = (value or "").strip()
    if match := _FHIR_DATETIME.fullmatch(text):
        if not match["time"]:
            return match["date"]
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone(local_zone))
    if match := _DICOM_DATE.fullmatch(text):
        return "-".join(match.groups())
    return None


def effective_date_time(
    started: str | None, acquired: datetime | None, issued: datetime, local_zone: str = "UTC"
) -> str:
    """``DiagnosticReport.effective[x]`` (also each Observation's): the clinically relevant time.

    In order: ``ImagingStudy.started`` (a time without a zone read in ``local_zone``; a date kept as a
    date); else the image's acquisition time (``acquired``, from the DICOM header through
    :func:`dicom_instant`); else ``issued``, when the AI produced the report. A time after ``issued``
    (a wrong zone upstream, a skewed modality clock) cannot be when the image was taken, so ``issued``
    stands in: effective ≤ issued always holds. Instants keep the offset they were read with.
    """
    candidate = parse_fhir_date_time(started, local_zone) if started else None
    if candidate is None:
        candidate = acquired
    if isinstance(candidate, str):
        issued_date = issued.astimezone(zone(local_zone)).date().isoformat()
        return candidate if candidate <= issued_date[: len(candidate)] else _instant(issued)
    if candidate is None or candidate > issued:
        return _instant(issued)
    return _instant(candidate)


def _instant(value: datetime) -> str:
    """An aware datetime as a FHIR dateTime to the second, with its offset (``+00:00`` for UTC)."""
    return value.isoformat(timespec="seconds")
