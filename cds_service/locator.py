"""Stage "find study": the patient's newest usable hip/pelvis ImagingStudy, from prefetch or FHIR search."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from cds_service.cdshooks.models import HookRequest
from cds_service.cdshooks.requests import studies_bundle
from cds_service.errors import BadRequestError, PrefetchUnavailableError
from cds_service.fhir.client import FhirClient, is_allowed
from cds_service.fhir.imaging_study import StudyRef, select_study
from cds_service.metrics import STAGE_LATENCY, timed
from cds_service.settings import Settings
from cds_service.telemetry import tracer

log = logging.getLogger(__name__)


def patient_id(request: HookRequest) -> str:
    """``context.patientId`` (every hook we answer requires it)."""
    patient = request.context.get("patientId")
    if not isinstance(patient, str) or not patient:
        raise BadRequestError("context.patientId is missing")
    return patient


class StudyLocator:
    """Finds the study a hook is about; talks only to the (allow-listed) FHIR server of the request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def find_study(self, request: HookRequest, orders: list[dict[str, Any]] | None = None) -> StudyRef | None:
        """The newest usable hip/pelvis study of ``context.patientId``: prefetch first, else a FHIR search.

        Per the CDS Hooks 2.0 prefetch rules: a ``studies`` key that is ``null`` means the EHR has no
        such data (no study, no card); an absent key or an OperationOutcome (the EHR could not
        prefetch) means "search yourself". A paginated Bundle is followed through its ``next`` links
        and Endpoints it references but does not hold are read from the (allow-listed) FHIR server.
        """
        with tracer().start_as_current_span("find_study") as span, timed(STAGE_LATENCY, stage="find_study"):
            patient = patient_id(request)
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
                bundle = await self._fhir_client(request).imaging_studies(patient)
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

    async def _complete_prefetch(
        self, request: HookRequest, bundle: dict[str, Any], max_pages: int = 5
    ) -> dict[str, Any]:
        """The prefetched searchset plus its ``next`` pages and missing Endpoints, when we may fetch them."""
        next_url = _next_link(bundle)
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
            next_url = _next_link(page)
        return await client.with_endpoints({**bundle, "entry": entries})


def _next_link(bundle: dict[str, Any]) -> str | None:
    return next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None)


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
