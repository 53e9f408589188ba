"""Signed viewer tokens: round trip, expiry, tampering, wrong key, no patient data."""

from __future__ import annotations

import base64

import pytest

from cds_service.viewer import InvalidToken, LinkExpired, LinkTampered, sign, verify

KEY = b"k" * 32
NOW = 1_700_000_000.0


def test_round_trip_is_url_safe():
    token = sign("abc-DEF_123", KEY, ttl_s=900, now=NOW)
    assert all(c.isalnum() or c in "-_." for c in token)
    assert verify(token, KEY, now=NOW + 899) == "abc-DEF_123"


def test_expired_token_is_refused():
    token = sign("r1", KEY, ttl_s=900, now=NOW)
    with pytest.raises(LinkExpired):
        verify(token, KEY, now=NOW + 900)
    with pytest.raises(InvalidToken):  # the common base class
        verify(token, KEY, now=NOW + 10_000)


def test_wrong_secret_is_refused():
    token = sign("r1", KEY, ttl_s=900, now=NOW)
    with pytest.raises(LinkTampered):
        verify(token, b"another key", now=NOW)


def test_extending_the_expiry_breaks_the_signature():
    token = sign("r1", KEY, ttl_s=10, now=NOW)
    _payload, mac = token.split(".")
    forged = base64.urlsafe_b64encode(f"r1.{int(NOW) + 10**6}".encode()).rstrip(b"=").decode() + "." + mac
    with pytest.raises(LinkTampered):
        verify(forged, KEY, now=NOW)


@pytest.mark.parametrize("position", [0, 5, -1, -5])
def test_any_changed_character_is_refused(position):
    token = sign("result-id", KEY, ttl_s=900, now=NOW)
    chars = list(token)
    chars[position] = "A" if chars[position] != "A" else "B"
    with pytest.raises(LinkTampered):
        verify("".join(chars), KEY, now=NOW)


@pytest.mark.parametrize("token", ["", ".", "abc", "a.b.c", "!!!.???", "x" * 600 + ".y", "YWJj.%%%"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(LinkTampered):
        verify(token, KEY, now=NOW)


def test_token_holds_only_the_result_id_and_expiry():
    token = sign("opaque-id", KEY, ttl_s=900, now=NOW)
    payload = base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()
    assert payload == f"opaque-id.{int(NOW) + 900}"


def test_bad_inputs_to_sign():
    with pytest.raises(ValueError):
        sign("r1", b"", ttl_s=10)
    with pytest.raises(ValueError):
        sign("has.dot", KEY, ttl_s=10)
