"""The hook handler: relevance → find study → (scheduled analysis) → report → card, under one error policy.

    HookRequest ──► relevance ──► StudyLocator.find_study ──► AnalysisScheduler (store · lease ·
    deadline) ──► Analyser (fetch → decode → split hips → infer → explain) ──► report ──► card

This module holds the hook policy only (which hooks wait, which answer "in progress", which problems
become which card); the parts live in :mod:`cds_service.locator`, :mod:`cds_service.scheduler`,
:mod:`cds_service.analyser` and the shared :mod:`cds_service.store`. One trace span per stage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cds_service.analyser import Analyser, UidMismatchError
from cds_service.cdshooks import cards, profiles, relevance
from cds_service.cdshooks.models import Card, CdsResponse, HookRequest
from cds_service.dicom.retrieve import DicomRetriever, DicomwebCredentials
from cds_service.domain import Analysis, ResultKey
from cds_service.errors import (
    BadRequestError,
    InferenceError,
    PrefetchUnavailableError,
    StudyUnavailableError,
    UnusableImageError,
    log_unexpected,
)
from cds_service.fhir.imaging_study import StudyRef
from cds_service.fhir.provenance import provenance_json
from cds_service.fhir.report import ReportContext, diagnostic_report_json
from cds_service.inference.client import TritonInferenceClient
from cds_service.locator import StudyLocator, patient_id
from cds_service.metrics import CARDS, HOOK_LATENCY
from cds_service.scheduler import AnalysisScheduler
from cds_service.settings import Settings
from cds_service.store import AsyncStore, open_store
from cds_service.telemetry import tracer

log = logging.getLogger(__name__)

ORDER_HOOKS = ("order-select", "order-sign")

#: The spans under a cold order hook's ``hook`` span, in pipeline order (one per stage).
STAGES = (
    "relevance",
    "find_study",
    "fetch",
    "decode",
    "split_hips",
    "infer",
    "explain",
    "store_result",
    "report",
    "card",
)

#: The card's "View heat map" link for a stored result (set by the web app), or None.
ViewerLink = Callable[[ResultKey], Awaitable[str | None]]


@dataclass(frozen=True)
class HookOutcome:
    """What one hook call produced (the report and PNG too, for the demo and the tests)."""

    response: CdsResponse
    report: dict[str, Any] | None = None  # the DiagnosticReport (FHIR JSON)
    analysis: Analysis | None = None


class _Outcome:
    """The hook's outcome label, on the span and for the latency histogram: ``analysed`` (this or
    another replica analysed the study for it) until a stage says otherwise, ``cached`` when a
    stored result answered."""

    def __init__(self, span: Any) -> None:
        self.span = span
        self.value = "analysed"
        span.set_attribute("hipcad.outcome", self.value)  # the success outcome, until a stage says otherwise

    def __call__(self, value: str) -> None:
        self.value = value
        self.span.set_attribute("hipcad.outcome", value)


class AnalysisPipeline:
    """Answers hook requests; one per process (it owns the clients, the scheduler and the store handle)."""

    def __init__(
        self,
        settings: Settings,
        inference: TritonInferenceClient,
        retriever: DicomRetriever,
        store: AsyncStore,
        viewer_link: ViewerLink | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.analyser = Analyser(settings, inference, retriever)
        self.locator = StudyLocator(settings)
        self.scheduler = AnalysisScheduler(settings, self.analyser, store)
        self.viewer_link = viewer_link
        self.order_codes = relevance.code_set(settings.relevant_order_codes)

    @classmethod
    def from_settings(cls, settings: Settings, store: AsyncStore | None = None) -> AnalysisPipeline:
        retriever = DicomRetriever(
            [*settings.dicomweb_allowed_bases, settings.dicom_folder.resolve().as_uri()],
            timeout_s=settings.dicomweb_timeout_s,
            credentials={base: DicomwebCredentials(**value) for base, value in settings.dicomweb_credentials.items()},
            local_folder=settings.dicom_folder,
            max_clients=settings.dicomweb_max_clients,
        )
        inference = TritonInferenceClient(settings.triton_url, settings.triton_model, settings.triton_timeout_s)
        return cls(settings, inference, retriever, store or open_store(settings))

    @property
    def inference(self) -> TritonInferenceClient:
        return self.analyser.inference

    @property
    def retriever(self) -> DicomRetriever:
        return self.analyser.retriever

    async def close(self) -> None:
        await self.scheduler.close()
        await self.analyser.inference.close()
        self.analyser.retriever.close()

    async def arrived(self, dataset: Any) -> Analysis | None:
        """An image routed to the DICOM listener (see :meth:`AnalysisScheduler.arrived`)."""
        return await self.scheduler.arrived(dataset)

    # Stage: relevance ------------------------------------------------------------------------
    def relevance(self, request: HookRequest) -> list[dict[str, Any]] | None:
        """The relevant draft orders (order hooks), [] when irrelevant; None for patient-view."""
        with tracer().start_as_current_span("relevance") as span:
            if request.hook not in ORDER_HOOKS:
                return None
            orders = relevance.relevant_orders(request.context, self.order_codes)
            span.set_attribute("hipcad.relevant_orders", len(orders))
            return orders

    # Stage: report ---------------------------------------------------------------------------
    def report(self, analysis: Analysis, context: ReportContext) -> dict[str, Any]:
        """The DiagnosticReport (FHIR JSON, validated) the card's suggestion creates."""
        with tracer().start_as_current_span("report"):
            chart = analysis.chart
            return diagnostic_report_json(
                analysis.findings, context, chart.data, overlay_size=chart.size, stored_in_pacs=analysis.stored_in_pacs
            )

    # Stage: card -----------------------------------------------------------------------------
    def card(
        self,
        analysis: Analysis,
        report: dict[str, Any],
        viewer_url: str | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> Card | None:
        with tracer().start_as_current_span("card") as span:
            if not cards.card_shown(analysis.findings, self.settings.negative_card, self.settings.low_suspicion_cards):
                return None
            card = cards.finding_card(
                analysis.findings,
                report,
                self.settings.base_url(),
                viewer_url=viewer_url,
                selection_behavior=self.settings.selection_behavior,
                in_pacs=cards.stored_in_pacs(analysis.stored_in_pacs),
                provenance=provenance,
                link_type=self.settings.card_link,
            )
            card = profiles.shape_card(card, self.settings)  # HIPCAD_EHR_PROFILE
            span.set_attribute("cds.indicator", card.indicator)
            return card

    # The whole hook ----------------------------------------------------------------------------
    async def handle(self, request: HookRequest, caller: str = "") -> HookOutcome:
        """Answer one hook request under one error policy.

        Bad input the pipeline finds (``BadRequestError``) and missing data
        (``PrefetchUnavailableError``, HTTP 412) propagate to the web layer; study and inference
        problems become an honest card; anything unexpected, in any stage (report and card
        included), becomes the same honest card and one full log line without patient data.
        ``caller`` is the JWT issuer (and tenant): part of the result key.
        """
        started = time.perf_counter()
        with tracer().start_as_current_span("hook") as span:
            span.set_attribute("cds.hook", request.hook)
            outcome = _Outcome(span)
            try:
                result = await self._handle(request, caller, outcome)
            except (BadRequestError, PrefetchUnavailableError) as exc:
                outcome(type(exc).__name__)
                raise
            except Exception as exc:  # a bug must not take the hook down: honest card, full log
                outcome("internal-error")
                log_unexpected(log, "answering a hook", exc)
                result = HookOutcome(CdsResponse(cards=[self._unavailable("internal-error")]))
            finally:
                HOOK_LATENCY.labels(hook=request.hook, outcome=outcome.value).observe(time.perf_counter() - started)
            for card in result.response.cards:
                CARDS.labels(indicator=card.indicator).inc()
            return result

    async def _handle(self, request: HookRequest, caller: str, outcome: _Outcome) -> HookOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.hook_deadline_s  # the budget of the whole answer
        orders = self.relevance(request)
        if orders is not None and not orders:
            outcome("not-relevant")
            return HookOutcome(CdsResponse())
        try:  # each FHIR request has its own timeout; paging and Endpoint reads together get the deadline
            async with asyncio.timeout_at(deadline):
                study = await self.locator.find_study(request, orders)
        except TimeoutError:
            raise PrefetchUnavailableError(
                f"FHIR server: the study search did not complete within the hook deadline "
                f"({self.settings.hook_deadline_s:g} s)"
            ) from None
        if study is None:
            outcome("no-study")
            return HookOutcome(CdsResponse())
        patient = patient_id(request)
        try:
            # The key names the served model versions: reading them waits on Triton, which may be down
            # or restarting (each hook's read retrying in turn), so it is bounded by the deadline too.
            async with asyncio.timeout_at(deadline):
                key = await self.scheduler.result_key(study, patient, caller)
        except TimeoutError:
            self.scheduler.start_when_keyed(study, patient, caller)
            outcome("in-progress" if orders is not None else "started")
            return HookOutcome(CdsResponse(cards=[] if orders is None else [self._in_progress()]))
        except InferenceError as exc:
            log.warning("models unavailable: %s", exc)
            outcome("InferenceError")
            return HookOutcome(CdsResponse(cards=[] if orders is None else [self._unavailable(exc.reason_code)]))
        if key is None:
            log.warning("the study's DICOMweb address is not on the allow-list; not contacted")
            outcome("store-not-allowed")
            return HookOutcome(CdsResponse(cards=[self._unavailable("image-store-not-allowed")]))
        if orders is None:  # patient-view: start the work, show a card only once it is ready
            if profiles.profile_for(self.settings).patient_view_waits:
                return await self._patient_view_waiting(request, study, key, deadline - loop.time(), outcome)
            analysis = await self.scheduler.cached_or_start(study, key, on_hit=lambda: outcome("cached"))
            if analysis is None:
                outcome("started")
                return HookOutcome(CdsResponse())
            return await self._answer(request, study, key, analysis, [])
        try:
            analysis = await self.scheduler.analysis_for(
                study, key, deadline - loop.time(), on_hit=lambda: outcome("cached")
            )
        except TimeoutError:
            outcome("in-progress")
            return HookOutcome(CdsResponse(cards=[self._in_progress()]))
        except UidMismatchError as exc:
            outcome("uid-mismatch")
            log.warning("no card: %s", exc)
            return HookOutcome(CdsResponse())
        except (StudyUnavailableError, UnusableImageError, InferenceError) as exc:
            outcome(type(exc).__name__)
            log.warning("study not analysed: %s", exc)
            return HookOutcome(CdsResponse(cards=[self._unavailable(exc.reason_code)]))
        return await self._answer(request, study, key, analysis, orders)

    async def _patient_view_waiting(
        self, request: HookRequest, study: StudyRef, key: ResultKey, timeout_s: float, outcome: _Outcome
    ) -> HookOutcome:
        """patient-view for an EHR that calls no order hook (the ``oracle`` profile): the finding card on
        the first call when the analysis fits the hook deadline; otherwise no card (nothing to nag about
        on chart open) while the analysis goes on for the next call."""
        try:
            analysis = await self.scheduler.analysis_for(
                study, key, max(timeout_s, 0.0), on_hit=lambda: outcome("cached")
            )
        except TimeoutError:
            outcome("started")
            return HookOutcome(CdsResponse())
        except (UidMismatchError, StudyUnavailableError, UnusableImageError, InferenceError) as exc:
            outcome(type(exc).__name__)
            log.warning("patient-view, no card: %s", type(exc).__name__)
            return HookOutcome(CdsResponse())
        return await self._answer(request, study, key, analysis, [])

    def _in_progress(self) -> Card:
        card = cards.problem_card(
            "AI hip fracture analysis in progress; results will show on the next check",
            "The radiograph is still being analysed. Sign or reopen the order to see the result.",
            self.settings.base_url(),
        )
        return profiles.shape_card(card, self.settings, "status")

    def _unavailable(self, reason_code: str) -> Card:
        """The failure card: a short reason code only; the full reason was logged by the caller."""
        return profiles.shape_card(
            cards.unavailable_card(reason_code, self.settings.base_url()), self.settings, "status"
        )

    async def _answer(
        self, request: HookRequest, study: StudyRef, key: ResultKey, analysis: Analysis, orders: list[dict[str, Any]]
    ) -> HookOutcome:
        encounter = request.context.get("encounterId")
        context = ReportContext(
            patient_id=patient_id(request),
            imaging_study_id=study.imaging_study_id,
            encounter_id=encounter if isinstance(encounter, str) else None,
            effective=study.started,
            based_on=study.based_on,
            local_timezone=self.settings.local_timezone,
        )
        report = self.report(analysis, context)
        viewer_url = None
        if self.viewer_link is not None:
            try:
                viewer_url = await self.viewer_link(self.scheduler.stored_key(key, analysis))
            except Exception as exc:  # the card stands without its link (the store may be restarting)
                log.warning("no viewer link: %s", type(exc).__name__)
        card = self.card(analysis, report, viewer_url, provenance_json(report))
        return HookOutcome(CdsResponse(cards=[card] if card else []), report, analysis)
