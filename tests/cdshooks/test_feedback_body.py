"""Feedback bodies: what the browser CDS Hooks sandbox sends is accepted and counted; bad types are 400."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.cdshooks.feedback import FeedbackRatesCollector, FeedbackStore, parse_feedback
from cds_service.cdshooks.models import Card, Coding, Source
from cds_service.errors import BadRequestError
from cds_service.metrics import exposition
from cds_service.settings import Settings
from cds_service.store import open_store

CARD = "5e2b0c1a-3f4d-4e5f-8a9b-0c1d2e3f4a5b"


def sandbox_override() -> dict:
    """The sandbox's override: a reason Coding with system and code only, and a comment."""
    return {
        "feedback": [
            {
                "card": CARD,
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {"system": "http://snomed.info/sct", "code": "428119001"},
                    "userComment": "Radiology already read it",
                },
                "outcomeTimestamp": "2026-11-22T10:05:00.000Z",
            }
        ]
    }


def encode(body: dict) -> bytes:
    return json.dumps(body).encode()


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    store = FeedbackStore(open_store(Settings(feedback_db=tmp_path / "feedback.sqlite3")).sql)
    card = Card(uuid=CARD, summary="s", indicator="warning", source=Source(label="hipcad"))
    store.record_cards("hip-fracture-order-select", [card])
    return store


def test_sandbox_override_body_is_accepted_and_counted(store):
    entries = parse_feedback(encode(sandbox_override())).feedback
    assert entries[0].overrideReason.reason.display is None
    assert entries[0].overrideReason.reason.code == "428119001"
    assert store.add("hip-fracture-order-select", entries) == 1
    assert store.add("hip-fracture-order-select", parse_feedback(encode(sandbox_override())).feedback) == 0
    rates = store.rates()["warning"]
    assert rates["overridden"] == 1 and rates["override_rate"] == 1.0
    FeedbackRatesCollector.serve(store)
    assert 'hipcad_feedback_cards_overridden_total{indicator="warning"} 1.0' in exposition()[0].decode()


def test_override_with_a_display_and_without_a_reason_are_accepted(store):
    body = sandbox_override()
    body["feedback"][0]["overrideReason"]["reason"]["display"] = "Already read by radiology"
    assert parse_feedback(encode(body)).feedback[0].overrideReason.reason.display == "Already read by radiology"
    body["feedback"][0]["overrideReason"] = {"userComment": "no reason chosen"}
    assert parse_feedback(encode(body)).feedback[0].overrideReason.reason is None


def test_card_override_reasons_still_require_a_display():
    with pytest.raises(ValueError):
        Coding(system="http://snomed.info/sct", code="428119001")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("card",), 5, "feedback.0.card: must be a string"),
        (("outcome",), "ignored", "feedback.0.outcome: must be 'accepted' or 'overridden'"),
        (("outcomeTimestamp",), 1763805900, "feedback.0.outcomeTimestamp: must be a date-time string"),
        (("outcomeTimestamp",), "yesterday", "feedback.0.outcomeTimestamp: "),
        (("overrideReason",), "wrong", "feedback.0.overrideReason: "),
        (("overrideReason", "reason"), ["x"], "feedback.0.overrideReason.reason: "),
        (("overrideReason", "reason", "code"), 428119001, "feedback.0.overrideReason.reason.code: must be a string"),
        (("overrideReason", "reason", "system"), None, "feedback.0.overrideReason.reason.system: must be a string"),
        (("overrideReason", "reason", "display"), 1, "feedback.0.overrideReason.reason.display: must be a string"),
        (("overrideReason", "userComment"), {"x": 1}, "feedback.0.overrideReason.userComment: must be a string"),
    ],
)
def test_wrong_types_are_400_naming_the_field(path, value, message):
    body = sandbox_override()
    target = body["feedback"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(BadRequestError) as caught:
        parse_feedback(encode(body))
    assert message in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b'{"feedback": []}', b'{"feedback": {}}', b'{"feedback": [' + b"[" * 100 + b"]" * 100 + b"]}"],
)
def test_malformed_bodies_are_400(data):
    with pytest.raises(BadRequestError):
        parse_feedback(data)


def test_accepted_needs_suggestions():
    body = sandbox_override()
    body["feedback"][0]["outcome"] = "accepted"
    with pytest.raises(BadRequestError, match="accepted feedback needs acceptedSuggestions"):
        parse_feedback(encode(body))
    body["feedback"][0]["acceptedSuggestions"] = [{"id": 5}]
    with pytest.raises(BadRequestError, match=r"feedback.0.acceptedSuggestions.0.id: must be a string"):
        parse_feedback(encode(body))
