"""Analysis on arrival: a DICOM Storage SCP (PS3.4 Annex B, pynetdicom) that images are routed to.

A PACS or modality sends CR/DX instances with C-STORE; AP pelvis/hip radiographs are kept in the
local folder store and analysed in the background (bounded concurrency), so the order hook that
follows is answered from the result store in milliseconds. Anything else is acknowledged and
ignored (a router sends whole studies); C-ECHO answers, so the node can be checked from the PACS.
Only the calling AE titles configured may associate (none configured: any).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pydicom
from pydicom.uid import ComputedRadiographyImageStorage as CR
from pydicom.uid import DigitalXRayImageStorageForPresentation as DX
from pydicom.uid import DigitalXRayImageStorageForProcessing as DX_PROCESSING
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification

from cds_service.dicom.decode import HIP_BODY_PARTS, MIN_EDGE

log = logging.getLogger(__name__)

ACCEPTED_SOP_CLASSES = (CR, DX, DX_PROCESSING)
#: View Position (0018,5101) values of a frontal pelvis; absent is accepted (many CR headers omit it).
FRONTAL_VIEWS = frozenset({"AP", "PA", ""})
#: C-STORE status codes (PS3.4 B.2.3): success, and "cannot understand" for unreadable data sets.
SUCCESS, CANNOT_UNDERSTAND = 0x0000, 0xC210


def refusal(ds: pydicom.Dataset, max_pixels: int) -> str | None:
    """Why ``ds`` is not an AP pelvis/hip radiograph to analyse, or None when it is (header only)."""
    modality = str(ds.get("Modality", "")).upper()
    if modality not in ("CR", "DX"):
        return f"modality {modality[:8] or 'absent'}"
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part and body_part not in HIP_BODY_PARTS:
        return "body part is not the hip or pelvis"
    if str(ds.get("ViewPosition", "") or "").strip().upper() not in FRONTAL_VIEWS:
        return "not a frontal view"
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if min(rows, cols) < MIN_EDGE or rows * cols > max_pixels:
        return "image size out of bounds"
    return None


class StorageListener:
    """The Storage SCP; ``on_image`` receives each accepted data set (on the association's thread)."""

    def __init__(
        self,
        on_image: Callable[[pydicom.Dataset], None],
        *,
        ae_title: str = "HIPCAD",
        host: str = "127.0.0.1",
        port: int = 11112,
        calling_ae_titles: Sequence[str] = (),
        max_pixels: int = 60_000_000,
    ) -> None:
        self.on_image = on_image
        self.address = (host, port)
        self.max_pixels = max_pixels
        self.ae = AE(ae_title=ae_title)
        self.ae.require_calling_aet = list(calling_ae_titles)
        for sop_class in ACCEPTED_SOP_CLASSES:
            self.ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self._server = None

    def _on_store(self, event: evt.Event) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as exc:  # an undecodable data set: say so, keep serving
            log.warning("C-STORE refused: unreadable data set (%s)", type(exc).__name__)
            return CANNOT_UNDERSTAND
        reason = refusal(ds, self.max_pixels)
        if reason is not None:
            log.info("C-STORE acknowledged, not analysed: %s", reason)
            return SUCCESS
        try:
            self.on_image(ds)
        except Exception as exc:  # the sender's transfer succeeded; our analysis is our problem
            log.warning("arrived image not queued for analysis (%s)", type(exc).__name__)
        return SUCCESS

    def start(self) -> None:
        """Listen in pynetdicom's own threads (returns at once)."""
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda _event: SUCCESS)]
        self._server = self.ae.start_server(self.address, block=False, evt_handlers=handlers)
        log.info("DICOM listener %s on %s:%d", self.ae.ae_title, *self.address)

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return self._server.server_address[1] if self._server is not None else self.address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
