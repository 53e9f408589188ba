"""CDS Hooks feedback (§ Feedback): what the clinician did with each card, stored in SQLite.

``POST /cds-services/{id}/feedback`` carries ``{"feedback": [{card, outcome, acceptedSuggestions,
overrideReason, outcomeTimestamp}]}``. The same feedback may arrive twice (EHR retries): each entry
is stored once, keyed by its content. Issued cards are recorded with their indicator, so acceptance
and override rates per indicator can be monitored — the published reader study, continuously.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator, model_validator

from cds_service.cdshooks.models import Card, FeedbackCoding
from cds_service.cdshooks.requests import RequestShapeError, load_json, shape_errors
from cds_service.errors import BadRequestError


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
    """Issued cards and their feedback (SQLite; one connection per call, safe across threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS card (
                    uuid TEXT PRIMARY KEY, service TEXT NOT NULL, indicator TEXT NOT NULL,
                    issued TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
                CREATE TABLE IF NOT EXISTS feedback (
                    key TEXT PRIMARY KEY, service TEXT NOT NULL, card TEXT NOT NULL, outcome TEXT NOT NULL,
                    reason TEXT, body TEXT NOT NULL, outcome_timestamp TEXT NOT NULL,
                    received TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
                """
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5)

    def record_cards(self, service: str, cards: list[Card]) -> None:
        if not cards:
            return
        with self._lock, self._connect() as db:
            db.executemany(
                "INSERT OR IGNORE INTO card (uuid, service, indicator) VALUES (?, ?, ?)",
                [(card.uuid, service, card.indicator) for card in cards],
            )

    def add(self, service: str, entries: list[Feedback]) -> int:
        """Store feedback entries; returns how many were new."""
        rows = [
            (
                entry.key(),
                service,
                entry.card,
                entry.outcome,
                entry.overrideReason.reason.code if entry.overrideReason and entry.overrideReason.reason else None,
                entry.model_dump_json(exclude_none=True),
                entry.outcomeTimestamp.isoformat(),
            )
            for entry in entries
        ]
        with self._lock, self._connect() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO feedback (key, service, card, outcome, reason, body, outcome_timestamp)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return db.total_changes - before

    def rates(self) -> dict[str, dict[str, float]]:
        """Per indicator: cards issued, cards accepted / overridden (distinct cards), and the rates."""
        with self._connect() as db:
            issued = dict(db.execute("SELECT indicator, COUNT(*) FROM card GROUP BY indicator").fetchall())
            outcomes = db.execute(
                "SELECT c.indicator, f.outcome, COUNT(DISTINCT f.card) FROM feedback f"
                " JOIN card c ON c.uuid = f.card GROUP BY c.indicator, f.outcome"
            ).fetchall()
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

    def prometheus(self) -> str:
        """The rates in Prometheus text exposition format."""
        lines = []
        metrics = {
            "hipcad_cards_issued_total": ("counter", "Cards returned to CDS clients", "issued"),
            "hipcad_cards_accepted_total": ("counter", "Cards with an accepted suggestion", "accepted"),
            "hipcad_cards_overridden_total": ("counter", "Cards overridden by the clinician", "overridden"),
            "hipcad_card_acceptance_ratio": ("gauge", "Accepted / issued cards", "acceptance_rate"),
            "hipcad_card_override_ratio": ("gauge", "Overridden / issued cards", "override_rate"),
        }
        rates = self.rates()
        for name, (kind, help_text, field) in metrics.items():
            lines += [f"# HELP {name} {help_text} (by card indicator).", f"# TYPE {name} {kind}"]
            lines += [f'{name}{{indicator="{ind}"}} {values[field]:g}' for ind, values in sorted(rates.items())]
        return "\n".join(lines) + "\n"


def parse_feedback(body: bytes, *, max_depth: int = 64, max_number_digits: int = 64) -> FeedbackRequest:
    """Parse a feedback request body with the JSON bounds; raises BadRequestError naming the failing field."""
    data = load_json(body, max_depth=max_depth, max_number_digits=max_number_digits)
    if not isinstance(data, dict):
        raise BadRequestError("invalid feedback body: body: must be a JSON object")
    try:
        return FeedbackRequest.model_validate(data)
    except ValidationError as exc:
        raise BadRequestError(f"invalid feedback body: {RequestShapeError(shape_errors(exc, ''))}") from None
