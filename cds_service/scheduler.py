"""When analyses run: the shared result store, in-flight de-duplication, deadlines, background completion.

    ResultKey ──► stored result? ──► running here? ──► lease free? ──► Analyser.analyse ──► store
                       │ hit              │ join             │ held by another replica
                       ▼                  ▼                  ▼
                    Analysis          same task        wait for its result (or take over
                                                       when its lease lapses)

A result is keyed by :class:`~cds_service.domain.ResultKey` and kept in the shared store, so the
next hook for a study is a cache hit on every replica. Two replicas receiving the same new study
run one analysis: the first takes a lease row, the other waits for the stored result. Hooks wait
at most their deadline; the analysis goes on in the background and is stored for the next hook.
A store that fails (PostgreSQL restarting) degrades to analysing locally: the hook still answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import astuple, replace
from typing import Any

from cds_service.analyser import Analyser, check_uids
from cds_service.domain import ARRIVAL, Analysis, ResultKey
from cds_service.errors import InferenceError, StudyUnavailableError
from cds_service.fhir.imaging_study import StudyRef
from cds_service.metrics import ANALYSES, ANALYSES_IN_FLIGHT, CACHE, LEASE_WAITS, STAGE_LATENCY, STORE_ERRORS, timed
from cds_service.settings import Settings
from cds_service.store import AsyncStore
from cds_service.telemetry import tracer

log = logging.getLogger(__name__)

ANSWERED_BY_ARRIVAL_ENTRIES = 1024

#: How long a key waits for Triton's model versions when a last known contract can stand in, seconds.
CONTRACT_WAIT_S = 1.0


class AnalysisScheduler:
    """Owns the running analyses of this process and the policy around the shared store."""

    def __init__(self, settings: Settings, analyser: Analyser, store: AsyncStore) -> None:
        self.settings = settings
        self.analyser = analyser
        self.store = store
        self._running: dict[tuple[str, ...], asyncio.Task[Analysis]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._answered_by_arrival: dict[ResultKey, ResultKey] = {}  # request key → arrival key (bounded)
        self._arrivals = asyncio.Semaphore(max(1, settings.arrival_concurrency))
        self.lease_s = settings.analysis_lease_s
        self.poll_s = 0.05
        self._label: str | None = None  # the model versions last read from Triton
        self._label_read: asyncio.Task[str] | None = None

    def pending(self) -> int:
        """Analyses running in this process plus background store writes (benchmarks, diagnostics)."""
        return len(self._running) + len(self._background)

    async def close(self) -> None:
        for task in [*self._running.values(), *self._background]:
            task.cancel()

    async def result_key(self, study: StudyRef, patient: str, caller: str) -> ResultKey | None:
        """The key of ``study`` for this patient and caller; None when the image store is not allowed.

        The allow-list is checked here, before any lookup: an address that may not be contacted gets
        no result at all, not even one computed earlier for the same UIDs.
        """
        store = self.analyser.retriever.allowed_base(study.endpoint_address)
        if store is None:
            return None
        return ResultKey(
            store, study.study_instance_uid, study.sop_instance_uid or "", patient, caller, await self.models_label()
        )

    async def models_label(self) -> str:
        """The served model versions (the result key's label): Triton's, or the last known contract.

        With a contract known (held here, or kept in the store by any replica), Triton gets
        ``CONTRACT_WAIT_S`` to answer; when it is down or restarting the last known label keys the
        lookup, so stored results are still answered (a miss then fails at inference, honestly). The
        read goes on in the background and updates the contract once Triton answers.
        """
        if self._label_read is None or self._label_read.done():
            self._label_read = asyncio.create_task(self._read_label())
            self._label_read.add_done_callback(_label_failed)
        known = self._label or await self._stored_label()
        if known is None:
            return await asyncio.shield(self._label_read)
        try:
            return await asyncio.wait_for(asyncio.shield(self._label_read), CONTRACT_WAIT_S)
        except (TimeoutError, InferenceError) as exc:
            log.warning(
                "Triton's model versions unavailable (%s): the last known contract keys results", type(exc).__name__
            )
            return known

    async def _read_label(self) -> str:
        label = await self.analyser.models_label()
        if label != self._label:
            self._label = label
            try:
                await self.store.put_model_contract(self.settings.triton_model, label)
            except Exception as exc:  # kept here; the next change is stored
                STORE_ERRORS.labels(operation="model_contract").inc()
                log.warning("model contract not stored: %s", type(exc).__name__)
        return label

    async def _stored_label(self) -> str | None:
        try:
            return await self.store.model_contract(self.settings.triton_model)
        except Exception as exc:
            STORE_ERRORS.labels(operation="model_contract").inc()
            log.warning("model contract unavailable: %s", type(exc).__name__)
            return None

    async def lookup(self, key: ResultKey, count: bool = True) -> Analysis | None:
        """The stored result for ``key``, or one analysed on arrival for the same store, UIDs and models.

        An arrival result was made by the service from an image routed to it, for no request: it
        answers every request with the same (allow-listed) store, UIDs and models whose ImagingStudy
        names that request's patient — exactly what that request would have fetched itself. It stays
        filed under its arrival key only (see :meth:`stored_key`). A failing store counts as a miss.
        ``count`` False: a poll while another replica analyses (not a cache lookup in the metrics' sense).
        """
        if not key.sop_instance_uid:
            return None
        arrival = replace(key, patient_id=ARRIVAL, caller=ARRIVAL) if key.patient_id != ARRIVAL else None
        try:
            # What this process holds first (both keys), then the database: the replica the image was
            # routed to answers its first hook without a database round trip.
            found = self.store.local(key)
            if found is None and arrival is not None:
                found = self._answered_by(arrival, key, self.store.local(arrival))
            if found is None:
                found = await self.store.get(key)
            if found is None and arrival is not None:
                found = self._answered_by(arrival, key, await self.store.get(arrival))
        except Exception as exc:  # what this process holds was already checked by store.get
            STORE_ERRORS.labels(operation="lookup").inc()
            log.warning("result store unavailable (lookup): %s", type(exc).__name__)
            found = None
        if count:
            CACHE.labels(result="hit" if found is not None else "miss").inc()
            if found is not None:
                tracer().start_span("cache_hit").end()
        return found

    def _answered_by(self, arrival: ResultKey, key: ResultKey, found: Analysis | None) -> Analysis | None:
        """Note that the arrival result ``found`` (if any) answers ``key``; returns ``found``."""
        if found is not None:
            self.store.remember(key, found)
            self._answered_by_arrival[key] = arrival
            while len(self._answered_by_arrival) > ANSWERED_BY_ARRIVAL_ENTRIES:
                self._answered_by_arrival.pop(next(iter(self._answered_by_arrival)))
        return found

    def stored_key(self, key: ResultKey, analysis: Analysis) -> ResultKey:
        """The key ``analysis`` is stored under in the database (what a viewer link points at).

        An arrival result answers a request under its own arrival key: it is not copied (megabytes of
        image) for each request it answers. An ImagingStudy that named no instance is keyed by the
        instance retrieved.
        """
        key = self._answered_by_arrival.get(key, key)
        if key.sop_instance_uid:
            return key
        return replace(key, sop_instance_uid=analysis.findings.sop_instance_uid)

    def task(
        self, study: StudyRef, key: ResultKey, results_to: str | None = None, dataset: Any = None
    ) -> asyncio.Task[Analysis]:
        """The running analysis for this key in this process, started if none is running (one per key)."""
        running = (*astuple(key), study.series_instance_uid or "")
        task = self._running.get(running)
        if task is None:
            task = asyncio.create_task(self._run(study, key, results_to, dataset))
            self._running[running] = task
            task.add_done_callback(_finished)
            task.add_done_callback(lambda _t, k=running: self._running.pop(k, None))
        return task

    def start_when_keyed(self, study: StudyRef, patient: str, caller: str) -> None:
        """Read the key in the background, then look the study up or start its analysis: for a hook whose
        deadline passed while the model versions were read (it answered "in progress")."""

        async def start() -> None:
            if (key := await self.result_key(study, patient, caller)) is not None:
                await self.cached_or_start(study, key)

        task = asyncio.create_task(start())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_finished)

    async def analysis_for(
        self, study: StudyRef, key: ResultKey, timeout_s: float, on_hit: Callable[[], None] | None = None
    ) -> Analysis:
        """The stored analysis, or a fresh one within ``timeout_s`` (it goes on in the background).

        ``on_hit`` is called when the stored result answers (the hook's ``cached`` outcome).
        """
        if cached := await self.lookup(key):
            if on_hit is not None:
                on_hit()
            return cached
        return await asyncio.wait_for(asyncio.shield(self.task(study, key)), timeout_s)

    async def cached_or_start(
        self, study: StudyRef, key: ResultKey, on_hit: Callable[[], None] | None = None
    ) -> Analysis | None:
        """The stored analysis, or None after starting one in the background (patient-view)."""
        if cached := await self.lookup(key):
            if on_hit is not None:
                on_hit()
            return cached
        self.task(study, key)
        return None

    async def _run(self, study: StudyRef, key: ResultKey, results_to: str | None, dataset: Any) -> Analysis:
        if not key.sop_instance_uid:  # the ImagingStudy named no instance: key by what is retrieved
            if dataset is None:
                dataset = await self.analyser.fetch(study)
            key = replace(key, sop_instance_uid=check_uids(dataset, study))
            if cached := await self.lookup(key):
                return cached
        return await self._leased(study, key, results_to, dataset)

    async def _claim(self, key: ResultKey) -> bool:
        try:
            return await self.store.claim(key, self.lease_s)
        except Exception as exc:  # no store: analyse here rather than not at all
            STORE_ERRORS.labels(operation="claim").inc()
            log.warning("result store unavailable (lease): %s", type(exc).__name__)
            return True

    async def _heartbeat(self, key: ResultKey) -> None:
        """Renew the lease every quarter of its length while the analysis runs: a replica that dies
        mid-analysis blocks the study for at most ``lease_s`` on the others."""
        while True:
            await asyncio.sleep(self.lease_s / 4)
            try:
                await self.store.claim(key, self.lease_s)
            except Exception:
                STORE_ERRORS.labels(operation="heartbeat").inc()  # the next beat tries again

    async def _leased(self, study: StudyRef, key: ResultKey, results_to: str | None, dataset: Any) -> Analysis:
        """Analyse under the key's lease; when another replica holds it, wait for its stored result."""
        while not await self._claim(key):
            LEASE_WAITS.inc()
            with tracer().start_as_current_span("wait_for_replica"):
                while True:
                    await asyncio.sleep(self.poll_s)
                    if found := await self.lookup(key, count=False):
                        return found
                    if await self.store.lease_holder(key) is None:  # failed or lapsed without a result: take over
                        break
        heartbeat = asyncio.create_task(self._heartbeat(key))
        try:
            # The holder before us may have stored its result just before releasing the lease.
            if found := await self.lookup(key, count=False):
                return found
            return await self._analyse(study, key, results_to, dataset)
        finally:
            heartbeat.cancel()
            try:
                await self.store.release(key)
            except Exception:
                STORE_ERRORS.labels(operation="release").inc()  # the lease lapses on its own

    async def _analyse(self, study: StudyRef, key: ResultKey, results_to: str | None, dataset: Any) -> Analysis:
        """Run the analysis under the lease this replica holds, and store it: the only place an
        analysis is counted (``hipcad_analyses_total``), so lease waits and cache hits never are."""
        ANALYSES.labels(event="started").inc()
        ANALYSES_IN_FLIGHT.inc()
        try:
            analysis = await self.analyser.analyse(study, dataset, results_to)
            try:
                with tracer().start_as_current_span("store_result"), timed(STAGE_LATENCY, stage="store_result"):
                    await self.store.put(key, analysis)
            except Exception as exc:
                STORE_ERRORS.labels(operation="put").inc()
                log.warning("result not stored (kept in this process only): %s", type(exc).__name__)
        except BaseException:
            ANALYSES.labels(event="failed").inc()
            raise
        finally:
            ANALYSES_IN_FLIGHT.dec()
        ANALYSES.labels(event="finished").inc()
        return analysis

    # Analysis on arrival -----------------------------------------------------------------------
    async def arrived(self, dataset: Any) -> Analysis | None:
        """Analyse an image routed to the DICOM listener: keep it in the folder store, analyse, file the result.

        The result is filed under ``HIPCAD_DICOM_LISTENER_SOURCE`` (the archive that routes to us) or
        the folder store, with no patient or caller (see :meth:`lookup`). Failures are logged, never raised.
        """
        folder = self.settings.dicom_folder.resolve().as_uri()
        retriever = self.analyser.retriever
        async with self._arrivals:
            with tracer().start_as_current_span("arrival") as span:
                try:
                    await retriever.store_instances(folder, [dataset])
                    study = StudyRef(
                        None,
                        str(dataset.StudyInstanceUID),
                        str(dataset.SeriesInstanceUID),
                        str(dataset.SOPInstanceUID),
                        folder,
                        None,
                    )
                    store = retriever.allowed_base(self.settings.dicom_listener_source or folder)
                    if store is None:
                        raise StudyUnavailableError("HIPCAD_DICOM_LISTENER_SOURCE is not an allow-listed base")
                    key = ResultKey(
                        store,
                        study.study_instance_uid,
                        study.sop_instance_uid or "",
                        ARRIVAL,
                        ARRIVAL,
                        await self.models_label(),
                    )
                    source = self.settings.dicom_listener_source or None  # results go back where the images live
                    # The image is in hand: kept in the folder store for later hooks, not read back from it.
                    analysis = await self.lookup(key) or await self.task(study, key, source, dataset)
                except Exception as exc:  # the listener must keep serving whatever one image does
                    span.set_attribute("hipcad.outcome", type(exc).__name__)
                    log.warning("arrived image not analysed: %s", type(exc).__name__)
                    return None
                span.set_attribute("hipcad.outcome", "analysed")
                return analysis


def _finished(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        # Every analysis task ends here, awaited by a hook or not: one line per failed analysis (the
        # waiting hooks log their own outcome). Retrieving the exception keeps asyncio quiet.
        log.warning("analysis failed: %s", type(exc).__name__)


def _label_failed(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        # Retrieved here, so a read no hook waited for (a known contract stood in) is still logged once.
        log.warning("model versions not read from Triton: %s", type(exc).__name__)
