"""UIDs of the result objects (PS3.5 Section 9 and Annex B), derived from what they say.

Every UID this service writes is a function of its inputs (a SHA-256 of length-prefixed parts), so
the same result always gets the same UID and any change in the inputs gives a new one:

* under a configured root (``HIPCAD_UID_ROOT``, an organisation's registered root, PS3.5 Section
  9.1): ``{root}.{decimal digits of the hash}``, cut to the 64-character limit;
* without one (the default): PS3.5 Section B.2, a UUID-derived UID ``2.25.{UUID as an integer}``.
  This project has no registered root of its own, so it uses none; the UUID is a name-based one
  (RFC 9562 version 8: hash bits with the version and variant bits set), so the 2.25 arc keeps
  its promise of globally unique values.
"""

from __future__ import annotations

import hashlib
import re

#: PS3.5 Section 9.1: components of digits, no leading zero (except "0" itself), dot separated.
_ROOT = re.compile(r"[0-2](\.(0|[1-9][0-9]*))*")
#: Longest root accepted: leaves at least 23 digits (over 76 bits) of hash under the 64-character limit.
MAX_ROOT_LENGTH = 40
UUID_ROOT = "2.25"


def check_root(root: str) -> str:
    """``root`` when it is empty (the 2.25 scheme) or a valid UID root of at most :data:`MAX_ROOT_LENGTH`."""
    if root and (len(root) > MAX_ROOT_LENGTH or _ROOT.fullmatch(root) is None or root == UUID_ROOT):
        raise ValueError(
            f"a UID root must be digits and dots without leading zeros, at most {MAX_ROOT_LENGTH} characters"
            " (leave it empty for 2.25 UUID-derived UIDs)"
        )
    return root


def _digest(parts: tuple[str, ...]) -> bytes:
    hasher = hashlib.sha256()
    for part in parts:  # length-prefixed: ("ab", "c") and ("a", "bc") never collide
        data = part.encode()
        hasher.update(len(data).to_bytes(8, "big") + data)
    return hasher.digest()


def _uuid_v8(data: bytes) -> int:
    """RFC 9562 Section 5.8: 128 bits with the version (8) and variant (0b10) fields set, as an integer."""
    value = int.from_bytes(data, "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)
    return (value & ~(0x3 << 62)) | (0x2 << 62)


def derived_uid(root: str, *parts: str) -> str:
    """The UID of ``parts`` under ``root`` (empty: ``2.25.`` + a name-based UUID), at most 64 characters."""
    digest = _digest((check_root(root), *parts))
    if not root:
        return f"{UUID_ROOT}.{_uuid_v8(digest[:16])}"
    return f"{root}.{int.from_bytes(digest, 'big')}"[:64]


def result_series_uid(
    study_uid: str, model_labels: str, sop_instance_uid: str, kind: str = "sr", *, content: str = "", root: str = ""
) -> str:
    """The Series Instance UID of one result object: ``kind`` (``"sr"``, ``"sc"``) of ``model_labels``
    on one analysed instance, saying ``content`` (:func:`cds_service.dicom.sr.content_key` for the
    SR, a digest of the pixels for the SC).

    The same content from the same models gives the same UID (a re-analysis is idempotent); a new
    model version or different content gives a new series beside the old one. The SR and the SC
    need a series each (a series has one modality: SR vs OT), hence ``kind``.
    """
    return derived_uid(root, "hipcad-result-series", study_uid, model_labels, sop_instance_uid, kind, content)


def result_instance_uid(series_uid: str, kind: str) -> str:
    """The SOP Instance UID of the one ``kind`` object in a result series: ``{series}.1`` (SR) or ``.2`` (SC).

    Derived from the series alone, so a stored object's kind is recovered from its UIDs whatever the
    root they were made under (:func:`cds_service.dicom.stow.stored_instance`).
    """
    return f"{series_uid[:62]}.{RESULT_KIND_NUMBERS[kind]}"


#: The last UID component of each kind of result object in its series.
RESULT_KIND_NUMBERS = {"sr": 1, "sc": 2}
