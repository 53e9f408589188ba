"""CDS Hooks feedback (§ Feedback): what the clinician did with each card, in the shared store.

``POST /cds-services/{id}/feedback`` carries ``{"feedback": [{card, outcome, acceptedSuggestions,
overrideReason, outcomeTimestamp}]}``. The same feedback may arrive twice (EHR retries): each entry
is stored once, keyed by its content. Issued cards are recorded with their indicator, so acceptance
and override rates per indicator can be monitored — the published reader study, continuously.

Each entry is also kept with the result the card showed (the EHR-side analogue of the clinician's
assessment of an AI result in IHE AIR): a finding card is recorded with the result its viewer link
opens, the DiagnosticReport its suggestion creates and the analysed ImagingStudy, so the viewer page
lists every :class:`Assessment` of a result and :mod:`cds_service.fhir.assessment` exports them as
FHIR. Feedback on a card the service did not issue, or on a card without a viewer link (a problem
card, or one whose link the EHR profile dropped), is counted but attached to no result. Nothing about
the user is stored beyond what the feedback itself carries (CDS Hooks feedback names no user).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator, model_validator

from cds_service.cdshooks.cards import OVERRIDE_REASONS
from cds_service.cdshooks.models import Card, FeedbackCoding
from cds_service.cdshooks.requests import RequestShapeError, load_json, shape_errors
from cds_service.errors import BadRequestError
from cds_service.metrics import FEEDBACK, REGISTRY
from cds_service.store.sql import AssessmentRow, IssuedCard, SqlStore


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: StrictStr


class OverrideReason(BaseModel):
    """`overrideReason`: the Coding the clinician chose (display optional here) and a free-text comment."""

    model_config = ConfigDict(extra="allow")
    reason: FeedbackCoding | None = None
    userComment: StrictStr | None = None


class Feedback(BaseModel):
    """One Feedback entry."""

    model_config = ConfigDict(extra="allow")
    card: StrictStr
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: datetime

    @field_validator("outcomeTimestamp", mode="before")
    @classmethod
    def _instant_string(cls, value: object) -> object:
        if not isinstance(value, str | datetime):  # no Unix numbers: the spec's type is a FHIR instant string
            raise ValueError("must be a date-time string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Feedback:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("accepted feedback needs acceptedSuggestions")
        if self.outcome == "overridden" and self.acceptedSuggestions:
            raise ValueError("overridden feedback cannot carry acceptedSuggestions")
        return self

    def key(self) -> str:
        """Content hash: identical feedback sent twice is stored once."""
        return hashlib.sha256(self.model_dump_json(exclude_none=True).encode()).hexdigest()


class FeedbackRequest(BaseModel):
    feedback: list[Feedback] = Field(min_length=1)


@dataclass(frozen=True)
class Assessment:
    """A clinician's assessment of an AI result: one stored feedback entry on a card that showed it.

    ``reason_display`` is the override reason as the card offered it (the Coding's own display, else
    the display of the card's ``overrideReasons`` entry with that system and code, else the code).
    ``report`` and ``imaging_study`` are the relative references the card was issued with.
    """

    key: str
    card: str
    indicator: str
    outcome: Literal["accepted", "overridden"]
    timestamp: datetime
    reason: FeedbackCoding | None
    reason_display: str | None
    comment: str | None
    report: str | None
    imaging_study: str | None

    @classmethod
    def from_row(cls, row: AssessmentRow) -> Assessment:
        entry = Feedback.model_validate_json(row.body)
        reason = entry.overrideReason.reason if entry.overrideReason else None
        timestamp = entry.outcomeTimestamp
        return cls(
            key=row.key,
            card=row.card,
            indicator=row.indicator,
            outcome=entry.outcome,
            # CDS Hooks: outcomeTimestamp is an instant; one sent without an offset is read as UTC.
            timestamp=timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC),
            reason=reason,
            reason_display=reason_display(reason),
            comment=entry.overrideReason.userComment if entry.overrideReason else None,
            report=row.report,
            imaging_study=row.imaging_study,
        )


def reason_display(reason: FeedbackCoding | None) -> str | None:
    """How to show an override reason: its display, the card's display for that code, or the code."""
    if reason is None:
        return None
    if reason.display:
        return reason.display
    offered = {(coding.system, coding.code): coding.display for coding in OVERRIDE_REASONS}
    return offered.get((reason.system, reason.code), reason.code)


def viewer_token(card: Card) -> str | None:
    """The signed viewer token a card links to: the path's last segment of an ``absolute`` link to
    ``/viewer/…``, or ``hipcadViewerToken`` in a ``smart`` link's ``appContext``."""
    for link in card.links or []:
        if link.type == "smart" and link.appContext:
            try:
                context = json.loads(link.appContext)
            except ValueError:
                continue
            if isinstance(context, dict) and isinstance(context.get("hipcadViewerToken"), str):
                return context["hipcadViewerToken"]
        elif link.type == "absolute":
            parts = urlsplit(link.url).path.rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] == "viewer":
                return parts[-1]
    return None


def _suggested_report(card: Card) -> dict[str, Any] | None:
    """The DiagnosticReport a card's suggestion creates, if it has one."""
    for suggestion in card.suggestions or []:
        for action in suggestion.actions or []:
            if action.type == "create" and (action.resource or {}).get("resourceType") == "DiagnosticReport":
                return action.resource
    return None


def _imaging_study(report: dict[str, Any] | None) -> str | None:
    """The analysed ImagingStudy a DiagnosticReport names (not its contained result series)."""
    for study in (report or {}).get("imagingStudy", []):
        reference = study.get("reference", "")
        if reference.startswith("ImagingStudy/"):
            return reference
    return None


class FeedbackStore:
    """Issued cards and their feedback, in the shared store (so every replica counts the same).

    ``viewer_secret`` (the viewer's signing key) lets a finding card be recorded with the result its
    viewer link opens; without it no card is attached to a result.
    """

    def __init__(self, sql: SqlStore, viewer_secret: bytes | None = None) -> None:
        self.sql = sql
        self.viewer_secret = viewer_secret

    def issued(self, card: Card, report: dict[str, Any] | None = None) -> IssuedCard:
        """What is recorded of ``card``: for a finding card (one with a viewer link) the link's result
        id, the DiagnosticReport its suggestion creates and the ImagingStudy; ``report`` is the hook's
        report, read for the ImagingStudy when the EHR profile stripped the suggestion."""
        from cds_service.viewer.signing import InvalidToken, verify  # the viewer imports this module

        token = viewer_token(card)
        link_id = None
        if token and self.viewer_secret:
            try:
                link_id = verify(token, self.viewer_secret)
            except InvalidToken:
                link_id = None
        if link_id is None:
            return IssuedCard(card.uuid, card.indicator)
        suggested = _suggested_report(card)
        reference = f"DiagnosticReport/{suggested['id']}" if suggested and suggested.get("id") else None
        return IssuedCard(card.uuid, card.indicator, link_id, reference, _imaging_study(suggested or report))

    def record_cards(self, service: str, cards: list[Card], report: dict[str, Any] | None = None) -> None:
        """Record the cards of one hook answer (``report``: its DiagnosticReport, see :meth:`issued`)."""
        self.sql.record_cards(service, [self.issued(card, report) for card in cards])

    def assessments(self, result_key: str) -> list[Assessment]:
        """The assessments of the stored result ``result_key`` (its digest), oldest first."""
        return assessments(self.sql.assessments(result_key))

    def add(self, service: str, entries: list[Feedback]) -> int:
        """Store feedback entries; returns how many were new."""
        rows = [
            {
                "key": entry.key(),
                "service": service,
                "card": entry.card,
                "outcome": entry.outcome,
                "reason": entry.overrideReason.reason.code
                if entry.overrideReason and entry.overrideReason.reason
                else None,
                "body": entry.model_dump_json(exclude_none=True),
                "outcome_timestamp": entry.outcomeTimestamp.isoformat(),
            }
            for entry in entries
        ]
        new = self.sql.add_feedback(rows)
        for outcome in new:
            FEEDBACK.labels(outcome=outcome).inc()
        return len(new)

    def rates(self) -> dict[str, dict[str, float]]:
        """Per indicator: cards issued, cards accepted / overridden (distinct cards), and the rates."""
        issued, outcomes = self.sql.feedback_counts()
        result: dict[str, dict[str, float]] = {
            indicator: {"issued": float(count), "accepted": 0.0, "overridden": 0.0}
            for indicator, count in issued.items()
        }
        for indicator, outcome, count in outcomes:
            result.setdefault(indicator, {"issued": 0.0, "accepted": 0.0, "overridden": 0.0})[outcome] = float(count)
        for values in result.values():
            values["acceptance_rate"] = values["accepted"] / values["issued"] if values["issued"] else 0.0
            values["override_rate"] = values["overridden"] / values["issued"] if values["issued"] else 0.0
        return result


class FeedbackRatesCollector(Collector):
    """Cards issued/accepted/overridden and the rates per indicator, read from the shared store at scrape
    time: the figures are the cluster's, identical on every replica (prometheus-client custom collector).

    One per process, registered once; :meth:`serve` points it at the app's store.
    """

    _instance: FeedbackRatesCollector | None = None

    def __init__(self) -> None:
        self.store: FeedbackStore | None = None

    @classmethod
    def serve(cls, store: FeedbackStore) -> None:
        if cls._instance is None:
            cls._instance = cls()
            REGISTRY.register(cls._instance)
        cls._instance.store = store

    def describe(self) -> list[Metric]:
        return []  # names are known only at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        if self.store is None:
            return
        try:
            rates = self.store.rates()
        except Exception:  # a scrape must not fail because the database is restarting
            return
        families = {
            "issued": CounterMetricFamily(
                "hipcad_feedback_cards_issued", "Cards issued (all replicas)", labels=["indicator"]
            ),
            "accepted": CounterMetricFamily(
                "hipcad_feedback_cards_accepted",
                "Cards with an accepted suggestion (all replicas)",
                labels=["indicator"],
            ),
            "overridden": CounterMetricFamily(
                "hipcad_feedback_cards_overridden",
                "Cards overridden by the clinician (all replicas)",
                labels=["indicator"],
            ),
            "acceptance_rate": GaugeMetricFamily(
                "hipcad_card_acceptance_ratio", "Accepted / issued cards", labels=["indicator"]
            ),
            "override_rate": GaugeMetricFamily(
                "hipcad_card_override_ratio", "Overridden / issued cards", labels=["indicator"]
            ),
        }
        for indicator, values in sorted(rates.items()):
            for field, family in families.items():
                family.add_metric([indicator], values[field])
        yield from families.values()


def assessments(rows: Sequence[AssessmentRow]) -> list[Assessment]:
    """Stored rows as :class:`Assessment` values, oldest first (rows whose body no longer parses are skipped)."""
    parsed = []
    for row in rows:
        try:
            parsed.append(Assessment.from_row(row))
        except ValidationError:
            continue
    return sorted(parsed, key=lambda item: (item.timestamp, item.key))


def parse_feedback(body: bytes, *, max_depth: int = 64, max_number_digits: int = 64) -> FeedbackRequest:
    """Parse a feedback request body with the JSON bounds; raises BadRequestError naming the failing field."""
    data = load_json(body, max_depth=max_depth, max_number_digits=max_number_digits)
    if not isinstance(data, dict):
        raise BadRequestError("invalid feedback body: body: must be a JSON object")
    try:
        return FeedbackRequest.model_validate(data)
    except ValidationError as exc:
        raise BadRequestError(f"invalid feedback body: {RequestShapeError(shape_errors(exc, ''))}") from None
