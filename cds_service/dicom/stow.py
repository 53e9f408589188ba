"""Store the DICOM results (SR, SC) into the source study with STOW-RS (PS3.18), via dicomweb-client.

Result UIDs are deterministic in (study, model versions, analysed instance): a re-analysis with
the same models writes the same Series and SOP Instance UIDs, and an archive keeps one copy (Orthanc
by default does not overwrite an instance it already has, ``OverwriteInstances: false``, and answers
the STOW-RS request with success). A new model version gives new UIDs, so both results coexist.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import pydicom
from dicomweb_client.api import DICOMClient
from pydicom.uid import generate_uid

from cds_service.errors import StudyUnavailableError

log = logging.getLogger(__name__)


def result_series_uid(study_uid: str, model_labels: str, sop_instance_uid: str, kind: str = "sr") -> str:
    """The Series Instance UID of the ``kind`` results of ``model_labels`` on one analysed instance.

    The SR and the SC need a series each (a series has one modality: SR vs OT), hence ``kind``.
    """
    return generate_uid(entropy_srcs=["hipcad-result-series", study_uid, model_labels, sop_instance_uid, kind])


def result_instance_uid(series_uid: str, kind: str) -> str:
    """The SOP Instance UID of one result object (``kind``: ``"sr"``, ``"sc"``) in a result series."""
    return generate_uid(entropy_srcs=["hipcad-result-instance", series_uid, kind])


def _under(address: str, base: str) -> bool:
    address, base = address.rstrip("/"), base.rstrip("/")
    return address == base or address.startswith(base + "/")


def store_results(base_url: str, datasets: Sequence[pydicom.Dataset], client: DICOMClient) -> list[str]:
    """STOW-RS ``datasets`` (one request per study) to ``client``; the SOP Instance UIDs stored.

    ``base_url`` is the allow-listed DICOMweb base the results may go to; a client pointing anywhere
    else is refused. Any instance the server reports as failed raises :class:`StudyUnavailableError`.
    """
    client_url = getattr(client, "base_url", None)
    if client_url is not None and not _under(str(client_url), base_url):
        raise ValueError("the DICOMweb client does not point under the allowed base")
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
        log.info("stored %d result instance(s)", len(uids))
        stored += uids
    return stored
