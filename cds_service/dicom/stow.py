"""Store the DICOM results (SR, SC) into the source study with STOW-RS (PS3.18), via dicomweb-client.

Result UIDs (:mod:`cds_service.dicom.uids`) are derived from (study, model versions, analysed
instance, content): a re-analysis that says the same writes the same Series and SOP Instance UIDs,
and an archive keeps one copy (Orthanc by default does not overwrite an instance it already has,
``OverwriteInstances: false``, and answers the STOW-RS request with success). A new model version,
or a result that says something else, gets new UIDs, so it is stored beside the old one instead of
being silently dropped.

What was stored is recorded as WADO-RS instance URLs (PS3.18 Section 10.4.1,
``{base}/studies/{study}/series/{series}/instances/{instance}``): the base the objects went to and
their UIDs in one string, from which :func:`stored_instance` recovers the parts and the kind.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom
from dicomweb_client.api import DICOMClient
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from cds_service.dicom.uids import result_instance_uid, result_series_uid
from cds_service.errors import StudyUnavailableError

__all__ = [
    "RESULT_KINDS",
    "StoredInstance",
    "instance_url",
    "result_instance_uid",
    "result_series_uid",
    "store_results",
    "stored_instance",
]

log = logging.getLogger(__name__)


#: SOP Class UID and series Modality of each kind of result object.
RESULT_KINDS = {"sr": (Comprehensive3DSRStorage, "SR"), "sc": (SecondaryCaptureImageStorage, "OT")}


def instance_url(base_url: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """The WADO-RS URL of one instance under the DICOMweb base ``base_url`` (PS3.18 Section 10.4.1)."""
    return f"{base_url.rstrip('/')}/studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}"


_INSTANCE_URL = re.compile(
    r"(?P<base>.+)/studies/(?P<study>[0-9.]+)/series/(?P<series>[0-9.]+)/instances/(?P<sop>[0-9.]+)"
)


@dataclass(frozen=True)
class StoredInstance:
    """One result object stored with STOW-RS: where (the DICOMweb base and UIDs) and what (the kind)."""

    base_url: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    kind: str  # a key of RESULT_KINDS

    @property
    def sop_class_uid(self) -> str:
        return str(RESULT_KINDS[self.kind][0])

    @property
    def modality(self) -> str:
        return RESULT_KINDS[self.kind][1]


def stored_instance(url: str) -> StoredInstance | None:
    """The result object behind a WADO-RS URL :func:`store_results` returned, or None for anything else.

    The kind is recovered from the UIDs (:func:`result_instance_uid` derives the instance from the
    series and the kind), so a URL of an object of another series is not mistaken for one.
    """
    match = _INSTANCE_URL.fullmatch(url)
    if match is None:
        return None
    series, sop = match["series"], match["sop"]
    kind = next((kind for kind in RESULT_KINDS if result_instance_uid(series, kind) == sop), None)
    if kind is None:
        return None
    return StoredInstance(match["base"], match["study"], series, sop, kind)


def _under(address: str, base: str) -> bool:
    address, base = address.rstrip("/"), base.rstrip("/")
    return address == base or address.startswith(base + "/")


def store_results(base_url: str, datasets: Sequence[pydicom.Dataset], client: DICOMClient) -> list[str]:
    """STOW-RS ``datasets`` (one request per study) to ``client``; the WADO-RS URLs of those stored.

    ``base_url`` is the allow-listed DICOMweb base the results may go to; a client pointing anywhere
    else is refused. Any instance the server reports as failed raises :class:`StudyUnavailableError`.
    """
    client_url = getattr(client, "base_url", None)
    if client_url is not None and not _under(str(client_url), base_url):
        raise ValueError("the DICOMweb client does not point under the allowed base")
    root = str(client_url or base_url)
    by_study: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for dataset in datasets:
        by_study[str(dataset.StudyInstanceUID)].append(dataset)
    stored: list[str] = []
    for study_uid, items in by_study.items():
        try:
            response = client.store_instances(items, study_instance_uid=study_uid)
        except Exception as exc:  # requests.HTTPError and friends; the message carries no patient data
            raise StudyUnavailableError(f"STOW-RS failed: {type(exc).__name__}") from exc
        failed = list(response.get("FailedSOPSequence", [])) if response is not None else []
        if failed:
            reasons = sorted({int(item.get("FailureReason", 0)) for item in failed})
            raise StudyUnavailableError(f"STOW-RS refused {len(failed)} instance(s), reasons {reasons}")
        referenced = list(response.get("ReferencedSOPSequence", [])) if response is not None else []
        uids = [str(item.ReferencedSOPInstanceUID) for item in referenced] or [str(d.SOPInstanceUID) for d in items]
        series = {str(d.SOPInstanceUID): str(d.SeriesInstanceUID) for d in items}
        log.info("stored %d result instance(s)", len(uids))
        stored += [instance_url(root, study_uid, series[uid], uid) for uid in uids if uid in series]
    return stored
