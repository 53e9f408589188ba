from datetime import UTC, datetime, timedelta, timezone

import pytest

from cds_service.fhir.effective import dicom_instant, effective_date_time, parse_fhir_date_time, zone
from cds_service.settings import Settings

ISSUED = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)


def test_a_dicom_time_with_its_timezone_offset_is_read_in_that_offset():
    instant = dicom_instant("20261122", "091500.25", "+0100", local_zone="America/New_York")
    assert instant == datetime(2026, 11, 22, 9, 15, 0, 250000, tzinfo=timezone(timedelta(hours=1)))
    assert dicom_instant("20261122", "0915", "-0500") == datetime(2026, 11, 22, 14, 15, tzinfo=UTC)


def test_a_dicom_time_without_an_offset_is_read_in_the_configured_zone_not_as_utc():
    winter = dicom_instant("20261122", "091500", None, local_zone="Europe/Zurich")
    summer = dicom_instant("20260622", "091500", "", local_zone="Europe/Zurich")
    assert winter.astimezone(UTC) == datetime(2026, 11, 22, 8, 15, tzinfo=UTC)
    assert summer.astimezone(UTC) == datetime(2026, 6, 22, 7, 15, tzinfo=UTC)  # daylight saving time
    assert dicom_instant("20261122", "091500", None).utcoffset() == timedelta(0)  # default zone: UTC


@pytest.mark.parametrize(("date", "time"), [("20261122", None), (None, "091500"), ("2026-11-22", "091500"), ("", "")])
def test_no_instant_without_a_dicom_date_and_time(date, time):
    assert dicom_instant(date, time, None) is None


@pytest.mark.parametrize(("offset", "expected"), [("+0100", "+01:00"), ("-0330", "-03:30"), ("+2500", None)])
def test_an_invalid_offset_falls_back_to_the_zone(offset, expected):
    instant = dicom_instant("20261122", "091500", offset, local_zone="Asia/Tokyo")
    assert instant.isoformat()[-6:] == (expected or "+09:00")


def test_effective_with_a_dicom_time_zone_is_not_after_issued():
    """The demo's bug: a local 09:15 (+01:00) labelled UTC was after an 08:30 UTC issue time."""
    acquired = dicom_instant("20261122", "091500", "+0100")
    effective = effective_date_time(None, acquired, ISSUED)
    assert effective == "2026-11-22T09:15:00+01:00"
    assert datetime.fromisoformat(effective) <= ISSUED


def test_effective_without_a_dicom_time_zone_uses_the_configured_zone_and_is_not_after_issued():
    assert effective_date_time("2026-11-22T09:15:00", None, ISSUED, "Europe/Zurich") == "2026-11-22T09:15:00+01:00"
    # Read as UTC the same local time would be after the report was issued: issued stands in.
    assert effective_date_time("2026-11-22T09:15:00", None, ISSUED) == ISSUED.isoformat()


def test_started_first_then_acquisition_then_issued():
    acquired = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    assert effective_date_time("2026-11-22T06:00:00Z", acquired, ISSUED) == "2026-11-22T06:00:00+00:00"
    assert effective_date_time(None, acquired, ISSUED) == "2026-11-22T07:00:00+00:00"
    assert effective_date_time(None, None, ISSUED) == "2026-11-22T08:30:00+00:00"


def test_a_date_is_kept_as_a_date_unless_after_the_local_issue_date():
    assert effective_date_time("2026-11-22", None, ISSUED, "Pacific/Kiritimati") == "2026-11-22"
    late = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # already 23 November in Kiritimati (+14:00)
    assert effective_date_time("2026-11-23", None, late, "Pacific/Kiritimati") == "2026-11-23"
    assert effective_date_time("2026-11-23", None, late) == late.isoformat()


def test_parse_fhir_date_time():
    assert parse_fhir_date_time("2026-11-22T09:15:00Z") == datetime(2026, 11, 22, 9, 15, tzinfo=UTC)
    assert parse_fhir_date_time("20261122") == "2026-11-22"
    assert parse_fhir_date_time("2026") == "2026"
    assert parse_fhir_date_time("22/11/2026") is None


def test_the_zone_setting_is_an_iana_name():
    assert Settings(local_timezone="Europe/Zurich").local_timezone == "Europe/Zurich"
    with pytest.raises(ValueError, match="Mars/Olympus"):
        Settings(local_timezone="Mars/Olympus")
    with pytest.raises(ValueError):
        zone("")
