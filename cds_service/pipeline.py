"""The hook pipeline as named stages with typed inputs and outputs, one trace span per stage.

    relevance → find study → fetch → decode → split hips → infer → explain → report → card

Each stage is a method that can be tested alone. The expensive part (fetch → explain) is cached
by :class:`ResultKey` (image store, study and SOP Instance UIDs, patient, caller, model versions),
so the second hook for a study answers in milliseconds and a result never crosses patients; it
runs under the hook deadline: when it cannot finish in time the hook answers at once with an
"analysis in progress" card and the analysis completes in the background for the next hook.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from datetime import timedelta
from typing import Any

import numpy as np
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from cds_service.cdshooks import cards, relevance
from cds_service.cdshooks.models import Card, CdsResponse, HookRequest
from cds_service.cdshooks.requests import studies_bundle
from cds_service.dicom.decode import DecodedImage, decode_dataset
from cds_service.dicom.preprocess import HipCrop, display_image, split_hips
from cds_service.dicom.results import result_objects
from cds_service.dicom.retrieve import DicomRetriever, DicomwebCredentials
from cds_service.errors import (
    BadRequestError,
    InferenceError,
    PrefetchUnavailableError,
    StudyUnavailableError,
    UnusableImageError,
    log_unexpected,
)
from cds_service.explain.heatmap import ChartImage, HipHeatmap, heat_canvas, normalise_cam, render_chart_image
from cds_service.fhir.client import FhirClient, is_allowed
from cds_service.fhir.imaging_study import StudyRef, select_study
from cds_service.fhir.report import ReportContext, build_diagnostic_report
from cds_service.findings import StudyFindings, interpret
from cds_service.inference.client import FRACTURE_MODEL, GARDEN_MODEL, HipInference, TritonInferenceClient
from cds_service.settings import Settings
from cds_service.telemetry import tracer

log = logging.getLogger(__name__)

ORDER_HOOKS = ("order-select", "order-sign")


@dataclass(frozen=True)
class Analysis:
    """Output of fetch → explain for one instance: what the cache holds."""

    findings: StudyFindings
    chart: ChartImage  # the radiograph with the heat map blended in, chart-sized JPEG (the report's image)
    image_shape: tuple[int, int]  # stored image (rows, columns)
    heatmaps: list[HipHeatmap]
    display: np.ndarray  # uint8 radiograph at display size (viewer)
    heat: np.ndarray  # float16 heat map in [0, 1] at display size (viewer)
    stored_in_pacs: tuple[str, ...] = ()  # SOP Instance UIDs of the SR and SC stored beside the images


@dataclass(frozen=True)
class ResultKey:
    """What an analysis is cached under: everything that must match for a result to be reused.

    The image store (the allow-listed base, canonical) and the patient are part of the key, so a
    request about another patient, or naming the same UIDs at another store, never receives a result
    computed for someone else; the caller (JWT issuer and tenant) keeps tenants apart; the model
    versions make a new model re-analyse.
    """

    store: str
    study_instance_uid: str
    sop_instance_uid: str
    patient_id: str
    caller: str
    models: str


#: Patient and caller of a result analysed on arrival (never a valid request's: patientId is required).
ARRIVAL = ""


class UidMismatchError(StudyUnavailableError):
    """The retrieved instance is not the one the ImagingStudy names (no card: the data disagree)."""


@dataclass(frozen=True)
class HookOutcome:
    """What one hook call produced (the report and PNG too, for the demo and the tests)."""

    response: CdsResponse
    report: DiagnosticReport | None = None
    analysis: Analysis | None = None


class AnalysisPipeline:
    """Answers hook requests; one instance per process (it owns the cache and the clients)."""

    def __init__(
        self,
        settings: Settings,
        inference: TritonInferenceClient,
        retriever: DicomRetriever,
        viewer_link: Callable[[Analysis], str] | None = None,
    ) -> None:
        self.settings = settings
        self.inference = inference
        self.retriever = retriever
        self.viewer_link = viewer_link  # the card's "View heat map" link (set by the web app)
        self._cache: OrderedDict[ResultKey, Analysis] = OrderedDict()
        self._running: dict[tuple[str, ...], asyncio.Task[Analysis]] = {}
        self.order_codes = relevance.code_set(settings.relevant_order_codes)
        self._arrivals = asyncio.Semaphore(max(1, settings.arrival_concurrency))
        self.cache_size = 128  # ≈ 1.5 MB each at the display size

    @classmethod
    def from_settings(cls, settings: Settings) -> AnalysisPipeline:
        retriever = DicomRetriever(
            [*settings.dicomweb_allowed_bases, settings.dicom_folder.resolve().as_uri()],
            timeout_s=settings.dicomweb_timeout_s,
            credentials={base: DicomwebCredentials(**value) for base, value in settings.dicomweb_credentials.items()},
            local_folder=settings.dicom_folder,
            max_clients=settings.dicomweb_max_clients,
        )
        inference = TritonInferenceClient(settings.triton_url, settings.triton_model, settings.triton_timeout_s)
        return cls(settings, inference, retriever)

    async def close(self) -> None:
        for task in self._running.values():
            task.cancel()
        await self.inference.close()
        self.retriever.close()

    # Stage: relevance ------------------------------------------------------------------------
    def relevance(self, request: HookRequest) -> list[dict[str, Any]] | None:
        """The relevant draft orders (order hooks), [] when irrelevant; None for patient-view."""
        with tracer().start_as_current_span("relevance") as span:
            if request.hook not in ORDER_HOOKS:
                return None
            orders = relevance.relevant_orders(request.context, self.order_codes)
            span.set_attribute("hipcad.relevant_orders", len(orders))
            return orders

    # Stage: find study -----------------------------------------------------------------------
    async def find_study(self, request: HookRequest, orders: list[dict[str, Any]] | None = None) -> StudyRef | None:
        """The newest usable hip/pelvis study of ``context.patientId``: prefetch first, else a FHIR search.

        Per the CDS Hooks 2.0 prefetch rules: a ``studies`` key that is ``null`` means the EHR has no
        such data (no study, no card); an absent key or an OperationOutcome (the EHR could not
        prefetch) means "search yourself". A paginated Bundle is followed through its ``next`` links
        and Endpoints it references but does not hold are read from the (allow-listed) FHIR server.
        """
        with tracer().start_as_current_span("find_study") as span:
            patient = self._patient_id(request)
            prefetched = request.prefetch or {}
            prefetch = prefetched.get("studies")
            if "studies" in prefetched and prefetch is None:
                span.set_attribute("hipcad.study_source", "prefetch-null")
                return None
            if isinstance(prefetch, dict) and prefetch.get("resourceType") == "Bundle":
                source = "prefetch"
                bundle = await self._complete_prefetch(request, prefetch)
            else:
                source = "fhir-search"
                bundle = await self._search_studies(request, patient)
            try:  # what the FHIR server added is held to the same shape as a prefetched Bundle
                studies_bundle(bundle)
            except ValueError as exc:
                raise PrefetchUnavailableError("the FHIR server answered with an unusable ImagingStudy Bundle") from exc
            span.set_attribute("hipcad.study_source", source)
            days = self.settings.study_lookback_days
            study = select_study(
                bundle,
                lookback=timedelta(days=days) if days > 0 else None,
                order_ids={str(order.get("id")) for order in orders or [] if order.get("id")},
                patient_id=patient,
            )
            span.set_attribute("hipcad.study_found", study is not None)
            return study

    def _fhir_client(self, request: HookRequest) -> FhirClient:
        if not request.fhirServer:
            raise PrefetchUnavailableError("no 'studies' prefetch and no fhirServer in the request")
        if not is_allowed(request.fhirServer, self.settings.fhir_allowed_bases):
            log.warning("fhirServer is not on the allow-list; not contacted")
            raise PrefetchUnavailableError("fhirServer is not on the allow-list")
        token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
        return FhirClient(request.fhirServer, token, self.settings.fhir_timeout_s)

    @staticmethod
    def _patient_id(request: HookRequest) -> str:
        patient = request.context.get("patientId")
        if not isinstance(patient, str) or not patient:
            raise BadRequestError("context.patientId is missing")  # every hook we answer requires it
        return patient

    async def _search_studies(self, request: HookRequest, patient: str) -> dict[str, Any]:
        return await self._fhir_client(request).imaging_studies(patient)

    async def _complete_prefetch(
        self, request: HookRequest, bundle: dict[str, Any], max_pages: int = 5
    ) -> dict[str, Any]:
        """The prefetched searchset plus its ``next`` pages and missing Endpoints, when we may fetch them."""
        next_url = next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
        if not request.fhirServer or not (next_url or _missing_endpoints(bundle)):
            return bundle
        try:
            client = self._fhir_client(request)
        except PrefetchUnavailableError:
            return bundle  # use what was prefetched rather than fail
        entries = list(bundle.get("entry") or [])
        for _ in range(max_pages):
            if not next_url or not is_allowed(next_url, [client.base_url]):
                break
            page = await client.get_url(next_url)
            entries += page.get("entry") or []
            next_url = next(
                (link.get("url") for link in page.get("link") or [] if link.get("relation") == "next"), None
            )
        return await client.with_endpoints({**bundle, "entry": entries})

    # Stage: fetch ----------------------------------------------------------------------------
    async def fetch(self, study: StudyRef) -> Any:
        with tracer().start_as_current_span("fetch"):
            return await self.retriever.retrieve_instance(
                study.endpoint_address, study.study_instance_uid, study.series_instance_uid, study.sop_instance_uid
            )

    # Stage: decode ---------------------------------------------------------------------------
    def decode(self, dataset: Any) -> DecodedImage:
        with tracer().start_as_current_span("decode") as span:
            span.set_attribute("dicom.transfer_syntax_uid", str(dataset.file_meta.get("TransferSyntaxUID", "")))
            image = decode_dataset(dataset, self.settings.max_image_pixels)
            span.set_attribute("dicom.rows", image.grey.shape[0])
            span.set_attribute("dicom.columns", image.grey.shape[1])
            return image

    # Stage: split hips -----------------------------------------------------------------------
    def split_hips(self, image: DecodedImage, size: int) -> list[HipCrop]:
        with tracer().start_as_current_span("split_hips") as span:
            crops = split_hips(image, size)
            span.set_attribute("hipcad.hips", len(crops))
            span.set_attribute("hipcad.laterality_known", all(c.laterality for c in crops))
            return crops

    # Stage: infer ----------------------------------------------------------------------------
    async def infer(self, crops: list[HipCrop]) -> HipInference:
        with tracer().start_as_current_span("infer") as span:
            span.set_attribute("hipcad.model", self.inference.ensemble)
            return await self.inference.infer(np.stack([crop.pixels for crop in crops]))

    # Stage: explain --------------------------------------------------------------------------
    def explain(
        self,
        image: DecodedImage,
        crops: list[HipCrop],
        outputs: HipInference,
        fracture_index: int,
        probabilities: list[float],
    ) -> tuple[list[HipHeatmap], np.ndarray, np.ndarray, ChartImage]:
        """Each hip's fracture-class map, normalised, then scaled by that hip's fracture probability.

        Renders the one chart-sized image the report carries; the full-resolution view is the
        viewer's (display image + heat layer, rendered when a clinician opens the link).

        The scaling keeps a confident "no fracture" hip from showing a full-strength map: min-max
        normalisation alone would blow its noise up to the same colours as a real finding.
        """
        with tracer().start_as_current_span("explain"):
            heatmaps = [
                HipHeatmap(
                    crop.laterality,
                    normalise_cam(outputs.fracture_cam[i, fracture_index]) * np.float32(probabilities[i]),
                    crop.mirrored,
                    crop.box,
                )
                for i, crop in enumerate(crops)
            ]
            display = display_image(image)
            heat = heat_canvas(heatmaps, image.grey.shape, display.shape)
            chart = render_chart_image(display, heat, heatmaps, image.grey.shape)
            return heatmaps, display, heat.astype(np.float16), chart

    # Stage: report ---------------------------------------------------------------------------
    def report(self, analysis: Analysis, context: ReportContext) -> DiagnosticReport:
        with tracer().start_as_current_span("report"):
            chart = analysis.chart
            return build_diagnostic_report(analysis.findings, context, chart.data, overlay_size=chart.size)

    # Stage: card -----------------------------------------------------------------------------
    def card(self, analysis: Analysis, report: DiagnosticReport) -> Card | None:
        with tracer().start_as_current_span("card") as span:
            if not analysis.findings.fractured_hips and not self.settings.negative_card:
                return None
            card = cards.finding_card(
                analysis.findings,
                report.model_dump(mode="json", exclude_none=True),
                self.settings.base_url(),
                viewer_url=self.viewer_link(analysis) if self.viewer_link else None,
                selection_behavior=self.settings.selection_behavior,
                in_pacs=bool(analysis.stored_in_pacs),
            )
            span.set_attribute("cds.indicator", card.indicator)
            return card

    # The analysis (fetch → explain), cached and deadline-bound --------------------------------
    async def _models_key(self) -> str:
        models = await self.inference.models()
        return ",".join(models[name].label for name in (FRACTURE_MODEL, GARDEN_MODEL))

    async def result_key(self, study: StudyRef, patient: str, caller: str) -> ResultKey | None:
        """The cache key of ``study`` for this patient and caller; None when the store is not allowed.

        The allow-list is checked here, before any cache lookup: an address that may not be
        contacted gets no result at all, not even one computed earlier for the same UIDs.
        """
        store = self.retriever.allowed_base(study.endpoint_address)
        if store is None:
            return None
        return ResultKey(
            store, study.study_instance_uid, study.sop_instance_uid or "", patient, caller, await self._models_key()
        )

    async def _analyse(
        self, study: StudyRef, key: ResultKey, results_to: str | None = None, dataset: Any = None
    ) -> Analysis:
        """fetch (unless ``dataset`` is already in hand: an arrived image) → … → explain → store results."""
        models = await self.inference.models()
        fracture, garden = models[FRACTURE_MODEL], models[GARDEN_MODEL]
        if dataset is None:
            dataset = await self.fetch(study)
        retrieved = _check_uids(dataset, study)
        if not key.sop_instance_uid:  # the ImagingStudy named no instance: cache by what was retrieved
            key = replace(key, sop_instance_uid=retrieved)
            if cached := self._cached(key):
                return cached
        image = await asyncio.to_thread(self.decode, dataset)
        crops = await asyncio.to_thread(self.split_hips, image, fracture.input_size)
        outputs = await self.infer(crops)
        findings = StudyFindings(
            hips=interpret([c.laterality for c in crops], outputs, fracture, garden),
            fracture_model=fracture,
            garden_model=garden,
            sop_instance_uid=image.sop_instance_uid,
        )
        fracture_index = fracture.class_names.index("fracture") if "fracture" in fracture.class_names else 1
        probabilities = [hip.fracture_probability for hip in findings.hips]
        heatmaps, display, heat, chart = await asyncio.to_thread(
            self.explain, image, crops, outputs, fracture_index, probabilities
        )
        stored = await self.store_results(
            results_to or study.endpoint_address, dataset, findings, display, heat, heatmaps
        )
        analysis = Analysis(findings, chart, image.grey.shape, heatmaps, display, heat, stored)
        self._remember(key, analysis)
        return analysis

    # Stage: store results (optional) ----------------------------------------------------------
    async def store_results(
        self,
        address: str,
        dataset: Any,
        findings: StudyFindings,
        display: np.ndarray,
        heat: np.ndarray,
        heatmaps: list[HipHeatmap],
    ) -> tuple[str, ...]:
        """With ``HIPCAD_STORE_RESULTS``: the SR and heat-map SC, STOW-RS'd into the study's own store at ``address``.

        A store that refuses is logged and the hook still answers (the EHR result does not depend on
        the PACS copy); the UIDs stored are returned so the card can say where else the result is.
        """
        if not self.settings.store_results:
            return ()
        with tracer().start_as_current_span("store_results") as span:
            try:
                objects = await asyncio.to_thread(result_objects, dataset, findings, display, heat, heatmaps)
                stored = await self.retriever.store_instances(address, objects)
            except Exception as exc:  # the card does not wait for, or fail with, the PACS copy
                span.set_attribute("hipcad.stored", 0)
                log.warning("result not stored in the PACS: %s", type(exc).__name__)
                return ()
            span.set_attribute("hipcad.stored", len(stored))
            return tuple(stored)

    def _remember(self, key: ResultKey, analysis: Analysis) -> None:
        self._cache[key] = analysis
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _task(
        self, study: StudyRef, key: ResultKey, results_to: str | None = None, dataset: Any = None
    ) -> asyncio.Task[Analysis]:
        """The running analysis for this key, started if none is running (one per key)."""
        running = (*astuple(key), study.series_instance_uid or "")
        task = self._running.get(running)
        if task is None:
            task = asyncio.create_task(self._analyse(study, key, results_to, dataset))
            self._running[running] = task
            task.add_done_callback(self._finished)
            task.add_done_callback(lambda _t, k=running: self._running.pop(k, None))
        return task

    @staticmethod
    def _finished(task: asyncio.Task[Analysis]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background analysis failed: %s", type(exc).__name__)  # retrieved: asyncio stays quiet

    def _cached(self, key: ResultKey) -> Analysis | None:
        """The result for ``key``, or one analysed on arrival for the same store, UIDs and models.

        An arrival result was made by the service from an image routed to it, for no request: it is
        bound to the first request that reaches it with the same (allow-listed) store and UIDs and
        whose ImagingStudy names that request's patient — exactly what that request would have
        fetched itself.
        """
        if not key.sop_instance_uid:
            return None
        cached = self._cache.get(key)
        if cached is None and (cached := self._cache.get(replace(key, patient_id=ARRIVAL, caller=ARRIVAL))):
            self._remember(key, cached)
        if cached is not None:
            tracer().start_span("cache_hit").end()
        return cached

    # Analysis on arrival -----------------------------------------------------------------------
    async def arrived(self, dataset: Any) -> Analysis | None:
        """Analyse an image routed to the DICOM listener: keep it in the folder store, analyse, file the result.

        The result is filed under ``HIPCAD_DICOM_LISTENER_SOURCE`` (the archive that routes to us) or
        the folder store, with no patient or caller (see :meth:`_cached`). Failures are logged, never raised.
        """
        folder = self.settings.dicom_folder.resolve().as_uri()
        async with self._arrivals:
            with tracer().start_as_current_span("arrival") as span:
                try:
                    await self.retriever.store_instances(folder, [dataset])
                    study = StudyRef(
                        None,
                        str(dataset.StudyInstanceUID),
                        str(dataset.SeriesInstanceUID),
                        str(dataset.SOPInstanceUID),
                        folder,
                        None,
                    )
                    store = self.retriever.allowed_base(self.settings.dicom_listener_source or folder)
                    if store is None:
                        raise StudyUnavailableError("HIPCAD_DICOM_LISTENER_SOURCE is not an allow-listed base")
                    key = ResultKey(
                        store,
                        study.study_instance_uid,
                        study.sop_instance_uid or "",
                        ARRIVAL,
                        ARRIVAL,
                        await self._models_key(),
                    )
                    source = self.settings.dicom_listener_source or None  # results go back where the images live
                    # The image is in hand: kept in the folder store for later hooks, not read back from it.
                    analysis = self._cached(key) or await self._task(study, key, source, dataset)
                except Exception as exc:  # the listener must keep serving whatever one image does
                    span.set_attribute("hipcad.outcome", type(exc).__name__)
                    log.warning("arrived image not analysed: %s", type(exc).__name__)
                    return None
                span.set_attribute("hipcad.outcome", "analysed")
                return analysis

    async def analysis_for(self, study: StudyRef, key: ResultKey, timeout_s: float) -> Analysis:
        """The cached analysis, or a fresh one within ``timeout_s`` (it goes on in the background)."""
        if cached := self._cached(key):
            return cached
        return await asyncio.wait_for(asyncio.shield(self._task(study, key)), timeout_s)

    def cached_or_start(self, study: StudyRef, key: ResultKey) -> Analysis | None:
        """The cached analysis, or None after starting one in the background (patient-view)."""
        if cached := self._cached(key):
            return cached
        self._task(study, key)
        return None

    # The whole hook ----------------------------------------------------------------------------
    async def handle(self, request: HookRequest, caller: str = "") -> HookOutcome:
        """Answer one hook request under one error policy.

        Bad input the pipeline finds (``BadRequestError``) and missing data
        (``PrefetchUnavailableError``, HTTP 412) propagate to the web layer; study and inference
        problems become an honest card; anything unexpected, in any stage (report and card
        included), becomes the same honest card and one full log line without patient data.
        ``caller`` is the JWT issuer (and tenant): part of the result key.
        """
        with tracer().start_as_current_span("hook") as span:
            span.set_attribute("cds.hook", request.hook)
            try:
                return await self._handle(request, caller, span)
            except (BadRequestError, PrefetchUnavailableError):
                raise
            except Exception as exc:  # a bug must not take the hook down: honest card, full log
                span.set_attribute("hipcad.outcome", "internal-error")
                log_unexpected(log, "answering a hook", exc)
                return HookOutcome(CdsResponse(cards=[self._unavailable("internal error")]))

    async def _handle(self, request: HookRequest, caller: str, span: Any) -> HookOutcome:
        orders = self.relevance(request)
        if orders is not None and not orders:
            return HookOutcome(CdsResponse())
        study = await self.find_study(request, orders)
        if study is None:
            span.set_attribute("hipcad.outcome", "no-study")
            return HookOutcome(CdsResponse())
        try:
            key = await self.result_key(study, self._patient_id(request), caller)
        except InferenceError as exc:
            log.warning("models unavailable: %s", exc)
            span.set_attribute("hipcad.outcome", "InferenceError")
            return HookOutcome(CdsResponse(cards=[] if orders is None else [self._unavailable(str(exc))]))
        if key is None:
            log.warning("the study's DICOMweb address is not on the allow-list; not contacted")
            span.set_attribute("hipcad.outcome", "store-not-allowed")
            return HookOutcome(CdsResponse(cards=[self._unavailable("image store not allowed")]))
        if orders is None:  # patient-view: start the work, show a card only once it is ready
            analysis = self.cached_or_start(study, key)
            if analysis is None:
                span.set_attribute("hipcad.outcome", "started")
                return HookOutcome(CdsResponse())
            return self._answer(request, study, analysis, [], span)
        try:
            analysis = await self.analysis_for(study, key, self.settings.hook_deadline_s)
        except TimeoutError:
            span.set_attribute("hipcad.outcome", "in-progress")
            card = cards.problem_card(
                "AI hip fracture analysis in progress; results will show on the next check",
                "The radiograph is still being analysed. Sign or reopen the order to see the result.",
                self.settings.base_url(),
            )
            return HookOutcome(CdsResponse(cards=[card]))
        except UidMismatchError as exc:
            span.set_attribute("hipcad.outcome", "uid-mismatch")
            log.warning("no card: %s", exc)
            return HookOutcome(CdsResponse())
        except (StudyUnavailableError, UnusableImageError, InferenceError) as exc:
            span.set_attribute("hipcad.outcome", type(exc).__name__)
            log.warning("study not analysed: %s", exc)
            return HookOutcome(CdsResponse(cards=[self._unavailable(str(exc))]))
        return self._answer(request, study, analysis, orders, span)

    def _unavailable(self, reason: str) -> Card:
        return cards.problem_card(
            "AI hip fracture analysis unavailable for the latest hip radiograph",
            f"The study could not be analysed: {reason}. Please review the images directly.",
            self.settings.base_url(),
        )

    def _answer(
        self, request: HookRequest, study: StudyRef, analysis: Analysis, orders: list[dict[str, Any]], span: Any
    ) -> HookOutcome:
        encounter = request.context.get("encounterId")
        context = ReportContext(
            patient_id=self._patient_id(request),
            imaging_study_id=study.imaging_study_id,
            order_reference=f"ServiceRequest/{orders[0]['id']}" if orders and orders[0].get("id") else None,
            encounter_id=encounter if isinstance(encounter, str) else None,
            effective=study.started,
        )
        report = self.report(analysis, context)
        card = self.card(analysis, report)
        span.set_attribute("hipcad.outcome", "analysed")
        return HookOutcome(CdsResponse(cards=[card] if card else []), report, analysis)


def _missing_endpoints(bundle: dict[str, Any]) -> bool:
    """True when an ImagingStudy of ``bundle`` references an ``Endpoint/<id>`` the Bundle does not hold."""
    resources = [e.get("resource") or {} for e in bundle.get("entry") or [] if isinstance(e, dict)]
    held = {f"Endpoint/{r.get('id')}" for r in resources if r.get("resourceType") == "Endpoint"}
    for study in (r for r in resources if r.get("resourceType") == "ImagingStudy"):
        refs = [r.get("reference") for r in study.get("endpoint") or []]
        refs += [r.get("reference") for s in study.get("series") or [] for r in s.get("endpoint") or []]
        if any(isinstance(ref, str) and ref.startswith("Endpoint/") and ref not in held for ref in refs):
            return True
    return False


def _check_uids(dataset: Any, study: StudyRef) -> str:
    """The retrieved SOP Instance UID, once the instance is the one the ImagingStudy names."""
    study_uid = str(dataset.get("StudyInstanceUID", ""))
    sop_uid = str(dataset.get("SOPInstanceUID", ""))
    if study_uid != study.study_instance_uid:
        raise UidMismatchError("the retrieved instance belongs to another study than the ImagingStudy names")
    if study.sop_instance_uid and sop_uid != study.sop_instance_uid:
        raise UidMismatchError("the retrieved instance is not the one the ImagingStudy names")
    if not sop_uid:
        raise UidMismatchError("the retrieved instance has no SOP Instance UID")
    return sop_uid
