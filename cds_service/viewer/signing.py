"""Short-lived signed viewer tokens: HMAC-SHA256 over the result id and the expiry time.

Token format (URL-safe, no padding, no patient data)::

    base64url("<result id>.<expiry, unix seconds>") "." base64url(HMAC-SHA256(secret, payload))

The result id is a random store key (``secrets.token_urlsafe``) and says nothing about the patient.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

_DOMAIN = b"hipcad-viewer-v1\x00"  # binds the MAC to this use of the key


class InvalidToken(Exception):
    """A viewer token that must be refused."""


class LinkExpired(InvalidToken):
    """The token was genuine but its lifetime has passed."""


class LinkTampered(InvalidToken):
    """The token is malformed or its signature does not match (altered, or another key)."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise LinkTampered("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise LinkTampered("malformed token") from exc


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()


def sign(result_id: str, secret: bytes, ttl_s: int, now: float | None = None) -> str:
    """A token for ``result_id`` valid for ``ttl_s`` seconds from ``now`` (default: the clock)."""
    if not secret:
        raise ValueError("empty signing secret")
    if not result_id or "." in result_id:
        raise ValueError("result id must be non-empty and contain no '.'")
    expires = int((time.time() if now is None else now) + ttl_s)
    payload = f"{result_id}.{expires}".encode()
    return f"{_b64encode(payload)}.{_b64encode(_mac(secret, payload))}"


def _open(token: str, secret: bytes) -> tuple[str, int]:
    """The result id and expiry of a genuine ``token``; raises :class:`LinkTampered`."""
    if not isinstance(token, str) or len(token) > 512 or token.count(".") != 1:
        raise LinkTampered("malformed token")
    payload_text, mac_text = token.split(".")
    payload, mac = _b64decode(payload_text), _b64decode(mac_text)
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise LinkTampered("bad signature")
    try:
        result_id, expires_text = payload.decode("ascii").rsplit(".", 1)
        return result_id, int(expires_text)
    except (UnicodeDecodeError, ValueError) as exc:  # only reachable with the right key
        raise LinkTampered("malformed payload") from exc


def verify(token: str, secret: bytes, now: float | None = None) -> str:
    """The result id inside ``token``; raises :class:`LinkTampered` or :class:`LinkExpired`."""
    result_id, expires = _open(token, secret)
    if (time.time() if now is None else now) >= expires:
        raise LinkExpired("link expired")
    return result_id


def verify_renewable(token: str, secret: bytes, grace_s: float, now: float | None = None) -> str:
    """The result id of a genuine ``token`` that is live or expired less than ``grace_s`` seconds ago.

    What the renewal route accepts: the holder of a card's genuine link gets a fresh one for the same
    result within the grace period. Raises :class:`LinkTampered`, or :class:`LinkExpired` past the grace.
    """
    result_id, expires = _open(token, secret)
    if (time.time() if now is None else now) >= expires + grace_s:
        raise LinkExpired("link expired beyond the renewal grace period")
    return result_id
