"""DicomRetriever under the outbound URL policy: no escape from the folder store, bounded clients, no redirects.

The folder store serves no file behind a symlink out of it, and finds files added after it was opened.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds_service.dicom.retrieve import DicomRetriever
from cds_service.errors import StudyUnavailableError
from tests.servers.redirect import redirecting_server as redirect_to_local


def write_instance(folder: Path) -> Dataset:
    """A tiny valid DX instance (the folder store indexes it like any other)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "policy-1", "Test^Policy", "DX"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "000000", "A1", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.arange(16, dtype=np.uint16).tobytes()
    ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return ds


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Dataset, Path, Dataset]:
    """An allow-listed store and, beside it, another folder holding a study of its own."""
    store, other = tmp_path / "store", tmp_path / "other"
    return store, write_instance(store), other, write_instance(other)


def folder_threads() -> int:
    return sum(t.name.startswith("dicom-folder") for t in threading.enumerate())


def settled_thread_count(at_most: int) -> int:
    """threading.active_count() once released worker threads have had a moment to exit."""
    deadline = time.monotonic() + 5
    while threading.active_count() > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def fetch(retriever: DicomRetriever, address: str, ds: Dataset, full: bool = False) -> pydicom.Dataset:
    uids = (ds.SeriesInstanceUID, ds.SOPInstanceUID) if full else (None, None)
    return asyncio.run(retriever.retrieve_instance(address, ds.StudyInstanceUID, *uids))


def test_the_store_serves_its_study_as_configured_today(layout):
    store, ds, _, _ = layout
    retriever = DicomRetriever([store.resolve().as_uri()])  # no local_folder: the file base defines it
    assert fetch(retriever, store.as_uri(), ds).SOPInstanceUID == ds.SOPInstanceUID
    assert retriever.allowed_base(f"file://localhost{store}/") == store.resolve().as_uri()
    retriever.close()


@pytest.mark.parametrize("local_folder", [True, False])
@pytest.mark.parametrize("escape", ["/../other", "/%2e%2e/other", "/%2E./other", "/.%2e/other", "/./../other"])
def test_traversal_out_of_the_store_is_refused_and_the_other_folder_never_opened(layout, escape, local_folder):
    store, _, other, other_ds = layout
    before, threads = sorted(other.iterdir()), folder_threads()
    retriever = DicomRetriever([store.as_uri()], local_folder=store if local_folder else None)
    with pytest.raises(StudyUnavailableError, match="not on the allow-list \\(path traversal\\)") as refused:
        fetch(retriever, f"file://{store}{escape}", other_ds)
    assert str(store) not in str(refused.value)  # the address never appears in the message
    assert retriever.allowed_base(f"file://{store}{escape}") is None
    assert retriever.client_count == 0 and folder_threads() == threads
    assert sorted(other.iterdir()) == before  # nothing written there (no index file)


def test_a_sibling_folder_inside_the_local_folder_is_still_not_an_allowed_base(layout):
    store, _, other, other_ds = layout
    retriever = DicomRetriever([store.as_uri()], local_folder=store.parent)
    with pytest.raises(StudyUnavailableError, match="not under an allow-listed base"):
        fetch(retriever, other.as_uri(), other_ds)
    assert retriever.client_count == 0


def test_a_symlink_out_of_the_store_is_refused(layout):
    store, _, other, other_ds = layout
    (store / "link").symlink_to(other, target_is_directory=True)
    retriever = DicomRetriever([store.as_uri()], local_folder=store)
    with pytest.raises(StudyUnavailableError, match="outside the local folder"):
        fetch(retriever, f"{store.as_uri()}/link", other_ds)
    assert retriever.client_count == 0


@pytest.mark.parametrize("link", ["file", "folder"])
@pytest.mark.parametrize("full", [True, False])
def test_an_instance_behind_a_symlink_out_of_the_store_is_not_served(layout, link, full):
    store, ds, other, other_ds = layout
    outside = next(other.iterdir())
    if link == "file":
        (store / "evil.dcm").symlink_to(outside)
    else:
        (store / "evil").symlink_to(other, target_is_directory=True)
    retriever = DicomRetriever([store.as_uri()], local_folder=store)
    with pytest.raises(StudyUnavailableError) as refused:
        fetch(retriever, store.as_uri(), other_ds, full=full)
    assert str(other) not in str(refused.value) and other_ds.StudyInstanceUID not in str(refused.value)
    assert fetch(retriever, store.as_uri(), ds, full=full).SOPInstanceUID == ds.SOPInstanceUID  # the store still serves
    retriever.close()


def test_a_file_swapped_for_a_symlink_after_indexing_is_refused(layout):
    store, ds, other, _ = layout
    retriever = DicomRetriever([store.as_uri()], local_folder=store)
    assert fetch(retriever, store.as_uri(), ds, full=True).SOPInstanceUID == ds.SOPInstanceUID  # indexed
    inside = store / f"{ds.SOPInstanceUID}.dcm"
    copy = other / "copy.dcm"
    copy.write_bytes(inside.read_bytes())  # same UIDs, outside the store
    inside.unlink()
    inside.symlink_to(copy)
    with pytest.raises(StudyUnavailableError, match="link out of the folder store"):
        fetch(retriever, store.as_uri(), ds, full=True)
    retriever.close()


@pytest.mark.parametrize("full", [True, False])
def test_a_file_added_after_the_store_was_opened_is_found(layout, full):
    store, ds, _, _ = layout
    retriever = DicomRetriever([store.as_uri()], local_folder=store)
    assert fetch(retriever, store.as_uri(), ds).SOPInstanceUID == ds.SOPInstanceUID  # the index is built
    arrived = write_instance(store / "later")
    assert fetch(retriever, store.as_uri(), arrived, full=full).SOPInstanceUID == arrived.SOPInstanceUID
    retriever.close()


def test_misses_refresh_the_index_at_most_once_per_interval(layout):
    store, ds, _, _ = layout
    retriever = DicomRetriever([store.as_uri()], local_folder=store, index_refresh_s=1.0)
    assert fetch(retriever, store.as_uri(), ds).SOPInstanceUID == ds.SOPInstanceUID
    first = write_instance(store / "first")
    assert fetch(retriever, store.as_uri(), first).SOPInstanceUID == first.SOPInstanceUID  # a miss: refreshed
    second = write_instance(store / "second")
    started = time.monotonic()
    for _ in range(20):  # misses within the interval: no re-scan, so the new file is not seen yet
        with pytest.raises(StudyUnavailableError, match="no instances"):
            fetch(retriever, store.as_uri(), second, full=True)
    assert time.monotonic() - started < 1.0, "the misses took the whole interval: the test proves nothing"
    time.sleep(1.0)
    assert fetch(retriever, store.as_uri(), second).SOPInstanceUID == second.SOPInstanceUID
    retriever.close()


def test_equivalent_spellings_share_one_client_and_one_thread(layout):
    store, ds, _, _ = layout
    baseline, threads = threading.active_count(), folder_threads()
    retriever = DicomRetriever([store.as_uri()], local_folder=store)
    encoded = f"file://{store.parent}/%73tore"  # %73 is "s"
    spellings = [
        store.as_uri(),
        f"{store.as_uri()}/",
        f"file://localhost{store}",
        f"file:{store}",
        f"{store}///",
        encoded,
    ]
    for i in range(50):
        spelling = spellings[i % len(spellings)]
        address = spelling if spelling.startswith("file:") else f"file://{spelling}"
        assert fetch(retriever, address, ds, full=i % 2 == 0).SOPInstanceUID == ds.SOPInstanceUID
    assert retriever.client_count == 1 and folder_threads() == threads + 1
    assert threading.active_count() <= baseline + 1
    retriever.close()
    assert settled_thread_count(baseline) <= baseline and folder_threads() == threads


def test_distinct_addresses_are_bounded_least_recently_used_first(layout):
    store, ds, _, _ = layout
    for i in range(50):
        (store / f"sub{i:02}").mkdir()
    baseline, threads = threading.active_count(), folder_threads()
    retriever = DicomRetriever([store.as_uri()], local_folder=store, max_clients=4)
    for i in range(50):
        address = f"{store.as_uri()}/sub{i:02}"
        with pytest.raises(StudyUnavailableError):  # an empty sub-folder: no such study, but a client all the same
            fetch(retriever, address, ds)
        assert retriever.client_count <= 4
        assert settled_thread_count(baseline + 4) <= baseline + 4
    # Least recently used out: sub47 is used again, so the root store's new client evicts sub46.
    with pytest.raises(StudyUnavailableError):
        fetch(retriever, f"{store.as_uri()}/sub47", ds)
    assert fetch(retriever, store.as_uri(), ds).SOPInstanceUID == ds.SOPInstanceUID
    open_now = [location.rsplit("/", 1)[-1] for _, location in retriever._stores]
    assert open_now == ["sub48", "sub49", "sub47", store.name]
    retriever.close()
    assert retriever.client_count == 0
    assert settled_thread_count(baseline) <= baseline and folder_threads() == threads


@pytest.fixture
def redirecting_pacs() -> Iterator[tuple[str, list[str]]]:
    """A "PACS" answering 302 to a second local server; yields its DICOMweb base and the second one's hits."""
    with redirect_to_local("/dicom-web") as server:
        yield server


def test_a_dicomweb_redirect_is_not_followed(redirecting_pacs, layout):
    base, hits = redirecting_pacs
    _, ds, _, _ = layout
    retriever = DicomRetriever([base], timeout_s=5)
    for address in (base, f"{base}/", base.replace("http://", "HTTP://")):
        with pytest.raises(StudyUnavailableError, match="redirect"):
            fetch(retriever, address, ds, full=True)
        with pytest.raises(StudyUnavailableError, match="redirect"):
            fetch(retriever, address, ds)  # the QIDO search, too
    assert hits == []
    assert retriever.client_count == 1  # three spellings, one client
    retriever.close()
