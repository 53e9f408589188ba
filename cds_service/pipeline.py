"""The hook pipeline as named stages with typed inputs and outputs, one trace span per stage.

    relevance → find study → fetch → decode → split hips → infer → explain → report → card

Each stage is a method that can be tested alone. The expensive part (fetch → explain) is cached
by (SOP Instance UID, model versions), so the second hook for a study answers in milliseconds, and
runs under the hook deadline: when it cannot finish in time the hook answers at once with an
"analysis in progress" card and the analysis completes in the background for the next hook.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from cds_service.cdshooks import cards, relevance
from cds_service.cdshooks.models import Card, CdsResponse, HookRequest
from cds_service.dicom.decode import DecodedImage, decode_dataset
from cds_service.dicom.preprocess import HipCrop, display_image, split_hips
from cds_service.dicom.retrieve import DicomRetriever, DicomwebCredentials
from cds_service.errors import (
    InferenceError,
    PrefetchUnavailableError,
    StudyUnavailableError,
    UnusableImageError,
)
from cds_service.explain.heatmap import HipHeatmap, heat_canvas, normalise_cam, render_overlay_png
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
    overlay_png: bytes  # the radiograph with the heat map blended in (report, cards)
    image_shape: tuple[int, int]  # stored image (rows, columns)
    heatmaps: list[HipHeatmap]
    display: np.ndarray  # uint8 radiograph at display size (viewer)
    heat: np.ndarray  # float16 heat map in [0, 1] at display size (viewer)


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
        self._cache: OrderedDict[tuple[str, str], Analysis] = OrderedDict()
        self._running: dict[tuple[str, str | None], asyncio.Task[Analysis]] = {}
        self.order_codes = relevance.code_set(settings.relevant_order_codes)
        self.cache_size = 128  # ≈ 1.5 MB each at the display size

    @classmethod
    def from_settings(cls, settings: Settings) -> AnalysisPipeline:
        retriever = DicomRetriever(
            [*settings.dicomweb_allowed_bases, settings.dicom_folder.resolve().as_uri()],
            timeout_s=settings.dicomweb_timeout_s,
            credentials={base: DicomwebCredentials(**value) for base, value in settings.dicomweb_credentials.items()},
        )
        inference = TritonInferenceClient(settings.triton_url, settings.triton_model, settings.triton_timeout_s)
        return cls(settings, inference, retriever)

    async def close(self) -> None:
        for task in self._running.values():
            task.cancel()
        await self.inference.close()

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
        """The newest usable hip/pelvis study: prefetch first, else a FHIR search with the token.

        A prefetch key that is absent, ``null`` (the EHR could not prefetch) or an OperationOutcome
        means "search yourself"; a paginated Bundle is followed through its ``next`` links.
        """
        with tracer().start_as_current_span("find_study") as span:
            prefetch = (request.prefetch or {}).get("studies")
            if isinstance(prefetch, dict) and prefetch.get("resourceType") == "Bundle":
                source = "prefetch"
                bundle = await self._follow_pages(request, prefetch)
            else:
                source = "fhir-search"
                bundle = await self._search_studies(request)
            span.set_attribute("hipcad.study_source", source)
            days = self.settings.study_lookback_days
            study = select_study(
                bundle,
                lookback=timedelta(days=days) if days > 0 else None,
                order_ids={str(order.get("id")) for order in orders or [] if order.get("id")},
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

    async def _search_studies(self, request: HookRequest) -> dict[str, Any]:
        patient = str(request.context.get("patientId") or "")
        if not patient:
            raise PrefetchUnavailableError("context.patientId is missing")
        return await self._fhir_client(request).imaging_studies(patient)

    async def _follow_pages(self, request: HookRequest, bundle: dict[str, Any], max_pages: int = 5) -> dict[str, Any]:
        """Append the entries of the ``next`` pages of a prefetched searchset (when we may fetch them)."""
        next_url = next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
        if not next_url or not request.fhirServer:
            return bundle
        try:
            client = self._fhir_client(request)
        except PrefetchUnavailableError:
            return bundle  # use the first page rather than fail
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
            image = decode_dataset(dataset)
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
    ) -> tuple[list[HipHeatmap], np.ndarray, np.ndarray, bytes]:
        """Each hip's fracture-class map, normalised, then scaled by that hip's fracture probability.

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
            png = render_overlay_png(display, heatmaps, image.grey.shape, heat=heat)
            return heatmaps, display, heat.astype(np.float16), png

    # Stage: report ---------------------------------------------------------------------------
    def report(self, analysis: Analysis, context: ReportContext) -> DiagnosticReport:
        with tracer().start_as_current_span("report"):
            rows, cols = analysis.display.shape
            return build_diagnostic_report(analysis.findings, context, analysis.overlay_png, overlay_size=(cols, rows))

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
            )
            span.set_attribute("cds.indicator", card.indicator)
            return card

    # The analysis (fetch → explain), cached and deadline-bound --------------------------------
    async def _models_key(self) -> str:
        models = await self.inference.models()
        return ",".join(models[name].label for name in (FRACTURE_MODEL, GARDEN_MODEL))

    async def _analyse(self, study: StudyRef, models_key: str) -> Analysis:
        models = await self.inference.models()
        fracture, garden = models[FRACTURE_MODEL], models[GARDEN_MODEL]
        dataset = await self.fetch(study)
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
        heatmaps, display, heat, png = await asyncio.to_thread(
            self.explain, image, crops, outputs, fracture_index, probabilities
        )
        analysis = Analysis(findings, png, image.grey.shape, heatmaps, display, heat)
        self._remember((image.sop_instance_uid, models_key), analysis)
        return analysis

    def _remember(self, key: tuple[str, str], analysis: Analysis) -> None:
        self._cache[key] = analysis
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _task(self, study: StudyRef, models_key: str) -> asyncio.Task[Analysis]:
        """The running analysis of this instance, started if none is running (one per instance)."""
        key = (study.study_instance_uid, study.sop_instance_uid)
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(self._analyse(study, models_key))
            self._running[key] = task
            task.add_done_callback(self._finished)
            task.add_done_callback(lambda _t, k=key: self._running.pop(k, None))
        return task

    @staticmethod
    def _finished(task: asyncio.Task[Analysis]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background analysis failed: %s", exc)  # retrieved, so asyncio does not complain

    def _cached(self, study: StudyRef, models_key: str) -> Analysis | None:
        if study.sop_instance_uid and (cached := self._cache.get((study.sop_instance_uid, models_key))):
            tracer().start_span("cache_hit").end()
            return cached
        return None

    async def analysis_for(self, study: StudyRef, timeout_s: float) -> Analysis:
        """The cached analysis, or a fresh one within ``timeout_s`` (it goes on in the background)."""
        models_key = await self._models_key()
        if cached := self._cached(study, models_key):
            return cached
        return await asyncio.wait_for(asyncio.shield(self._task(study, models_key)), timeout_s)

    async def cached_or_start(self, study: StudyRef) -> Analysis | None:
        """The cached analysis, or None after starting one in the background (patient-view)."""
        try:
            models_key = await self._models_key()
        except InferenceError as exc:
            log.warning("analysis not started: %s", exc)
            return None
        if cached := self._cached(study, models_key):
            return cached
        self._task(study, models_key)
        return None

    # The whole hook ----------------------------------------------------------------------------
    async def handle(self, request: HookRequest) -> HookOutcome:
        """Answer one hook request (no exception escapes for study or inference problems)."""
        with tracer().start_as_current_span("hook") as span:
            span.set_attribute("cds.hook", request.hook)
            base = self.settings.base_url()
            orders = self.relevance(request)
            if orders is not None and not orders:
                return HookOutcome(CdsResponse())
            study = await self.find_study(request, orders)
            if study is None:
                span.set_attribute("hipcad.outcome", "no-study")
                return HookOutcome(CdsResponse())
            if orders is None:  # patient-view: start the work, show a card only once it is ready
                analysis = await self.cached_or_start(study)
                if analysis is None:
                    span.set_attribute("hipcad.outcome", "started")
                    return HookOutcome(CdsResponse())
                return self._answer(request, study, analysis, [], span)
            try:
                analysis = await self.analysis_for(study, self.settings.hook_deadline_s)
            except TimeoutError:
                span.set_attribute("hipcad.outcome", "in-progress")
                card = cards.problem_card(
                    "AI hip fracture analysis in progress; results will show on the next check",
                    "The radiograph is still being analysed. Sign or reopen the order to see the result.",
                    base,
                )
                return HookOutcome(CdsResponse(cards=[card]))
            except (StudyUnavailableError, UnusableImageError, InferenceError) as exc:
                span.set_attribute("hipcad.outcome", type(exc).__name__)
                log.warning("study not analysed: %s", exc)
                return HookOutcome(CdsResponse(cards=[self._unavailable(str(exc))]))
            except Exception as exc:  # a bug must not take the hook down: honest card, full log
                span.set_attribute("hipcad.outcome", "internal-error")
                log.exception("unexpected error while analysing a study (%s)", type(exc).__name__)
                return HookOutcome(CdsResponse(cards=[self._unavailable("internal error")]))
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
        context = ReportContext(
            patient_id=str(request.context.get("patientId") or ""),
            imaging_study_id=study.imaging_study_id,
            order_reference=f"ServiceRequest/{orders[0]['id']}" if orders and orders[0].get("id") else None,
            encounter_id=request.context.get("encounterId"),
            effective=study.started,
        )
        report = self.report(analysis, context)
        card = self.card(analysis, report)
        span.set_attribute("hipcad.outcome", "analysed")
        return HookOutcome(CdsResponse(cards=[card] if card else []), report, analysis)
