"""CDS Hooks feedback (§ Feedback): what the clinician did with each card, in the shared store.

``POST /cds-services/{id}/feedback`` carries ``{"feedback": [{card, outcome, acceptedSuggestions,
overrideReason, outcomeTimestamp}]}``. The same feedback may arrive twice (EHR retries): each entry
is stored once, keyed by its content. Issued cards are recorded with their indicator, so acceptance
and override rates per indicator can be monitored — the published reader study, continuously.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator, model_validator

from cds_service.cdshooks.models import Card, FeedbackCoding
from cds_service.cdshooks.requests import RequestShapeError, load_json, shape_errors
from cds_service.errors import BadRequestError
from cds_service.metrics import FEEDBACK, REGISTRY
from cds_service.store.sql import SqlStore


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


class FeedbackStore:
    """Issued cards and their feedback, in the shared store (so every replica counts the same)."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def record_cards(self, service: str, cards: list[Card]) -> None:
        self.sql.record_cards(service, [(card.uuid, card.indicator) for card in cards])

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


def parse_feedback(body: bytes, *, max_depth: int = 64, max_number_digits: int = 64) -> FeedbackRequest:
    """Parse a feedback request body with the JSON bounds; raises BadRequestError naming the failing field."""
    data = load_json(body, max_depth=max_depth, max_number_digits=max_number_digits)
    if not isinstance(data, dict):
        raise BadRequestError("invalid feedback body: body: must be a JSON object")
    try:
        return FeedbackRequest.model_validate(data)
    except ValidationError as exc:
        raise BadRequestError(f"invalid feedback body: {RequestShapeError(shape_errors(exc, ''))}") from None
