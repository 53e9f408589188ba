"""Bounded inflation of Deflated Explicit VR Little Endian data sets (DICOM PS3.5 §A.5).

A deflated data set is one raw deflate stream (RFC 1951) after the File Meta Information. Deflate
reaches ~1000:1, so 256 kB on the wire became 256 MB in memory: pydicom (``filereader.read_partial``)
and pynetdicom (``dsutils.decode``, C-STORE with the deflated transfer syntax) both call
``zlib.decompress`` on the whole stream, with no limit, before any header can be checked. Every
instance reaches the service through one of them (DICOMweb and folder stores via dicomweb_client's
``dcmread``, the Storage SCP via pynetdicom), so :func:`install` binds a bounded ``decompress`` into
those two modules rather than into each caller: inflation stops ``max_length`` bytes in
(``zlib.decompressobj``) and the data set is refused.
"""

from __future__ import annotations

import threading
import types
import zlib
from typing import Any

from cds_service.errors import UnusableImageError

#: Largest inflated data set: the default pixel limit's largest image (60 M pixels × 2 bytes) and
#: its header fit; a real radiograph inflates to a tenth of it.
MAX_INFLATED_BYTES = 128 * 2**20
#: Output per inflation step: the most a refused stream allocates past the limit.
_CHUNK = 4 * 2**20


class InflationLimitError(UnusableImageError, ValueError):
    """A deflated data set inflates beyond its bound.

    Also a ValueError, the type pydicom's readers raise for a corrupt file: callers that skip
    unreadable files (dicomweb_client's folder index) skip this one instead of failing whole.
    """


def inflate(data: bytes, wbits: int = -zlib.MAX_WBITS, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """``zlib.decompress(data, wbits)``, refused as soon as the output would exceed ``limit`` bytes.

    Raises:
        InflationLimitError: the stream inflates beyond ``limit`` (nothing past it is allocated).
        zlib.error: the stream is corrupt, as ``zlib.decompress`` would raise.
    """
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    pending = data
    while pending:  # at most _CHUNK bytes of output per call; what is left of the input waits
        out += inflater.decompress(pending, _CHUNK)
        if len(out) > limit:
            raise InflationLimitError(f"deflated data set inflates beyond the {limit}-byte limit")
        pending = inflater.unconsumed_tail
    out += inflater.flush()  # all input consumed: only zlib's last buffered bytes remain
    if len(out) > limit:
        raise InflationLimitError(f"deflated data set inflates beyond the {limit}-byte limit")
    return bytes(out)


class _BoundedZlib(types.ModuleType):
    """The ``zlib`` module with a bounded ``decompress``; every other name is zlib's own."""

    def __init__(self, limit: int) -> None:
        super().__init__("zlib", "zlib with a bounded decompress (cds_service.dicom.inflate)")
        self.limit = limit

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)

    def decompress(self, data: bytes, wbits: int = zlib.MAX_WBITS, bufsize: int = zlib.DEF_BUF_SIZE) -> bytes:
        """As ``zlib.decompress``, within ``self.limit`` bytes (``bufsize`` is only a hint there too)."""
        return inflate(data, wbits, self.limit)


_installed = threading.Lock()


def install(limit: int = MAX_INFLATED_BYTES) -> None:
    """Bound the inflation of every deflated data set pydicom or pynetdicom reads in this process.

    Idempotent (the last ``limit`` wins). Fails loudly when a library no longer reads deflated data
    through its module-level ``zlib``: a silent no-op would reopen the bomb.
    """
    import pydicom.filereader
    import pynetdicom.dsutils

    with _installed:
        for module in (pydicom.filereader, pynetdicom.dsutils):
            current = getattr(module, "zlib", None)
            if current is not zlib and not isinstance(current, _BoundedZlib):
                raise RuntimeError(
                    f"{module.__name__} no longer inflates through zlib: the Deflate bound is not applied"
                )
            module.zlib = _BoundedZlib(limit)  # type: ignore[attr-defined]
