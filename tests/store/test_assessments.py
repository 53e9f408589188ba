"""Feedback kept with the result its card showed: the store's join result → card → feedback, both engines."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds_service.store.durable import DurableSqlStore
from cds_service.store.migrate import upgrade
from cds_service.store.sql import IssuedCard, SqlStore, engine_for


@pytest.fixture(params=["sqlite", "postgresql"])
def sql(request, tmp_path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_server").url
    engine = engine_for(url)
    upgrade(engine)
    yield SqlStore(engine)
    engine.dispose()


def feedback_row(card: str, outcome: str, stamp: str, reason: str | None = None) -> dict:
    body = {"card": card, "outcome": outcome, "outcomeTimestamp": stamp}
    if reason:
        body["overrideReason"] = {
            "reason": {"system": "https://hipcad.example.org/fhir/CodeSystem/override-reason", "code": reason}
        }
    else:
        body["acceptedSuggestions"] = [{"id": "s1"}]
    return {
        "key": uuid.uuid4().hex,
        "service": "svc",
        "card": card,
        "outcome": outcome,
        "reason": reason,
        "body": json.dumps(body),
        "outcome_timestamp": stamp,
    }


def shown(sql: SqlStore, result: str) -> tuple[str, str]:
    """A card showing ``result`` through a fresh viewer link: (card uuid, link id)."""
    link = sql.put_viewer_link(result, ttl_s=600)
    card = str(uuid.uuid4())
    sql.record_cards("svc", [IssuedCard(card, "warning", link, "DiagnosticReport/r-1", "ImagingStudy/s-1")])
    return card, link


def test_each_assessment_of_a_card_shown_twice_joins_the_result(sql):
    result = uuid.uuid4().hex
    sql.put_result(result, b"analysis", ttl_s=600)
    first, link = shown(sql, result)
    second, _ = shown(sql, result)  # the same result on a later hook's card
    sql.add_feedback([feedback_row(second, "overridden", "2026-11-22T10:07:00+00:00", "disagree")])
    sql.add_feedback([feedback_row(first, "accepted", "2026-11-22T10:05:00+00:00")])
    rows = sql.assessments(result)
    assert [(row.card, row.outcome) for row in rows] == [(first, "accepted"), (second, "overridden")]
    assert {(row.indicator, row.report, row.imaging_study) for row in rows} == {
        ("warning", "DiagnosticReport/r-1", "ImagingStudy/s-1")
    }
    assert sql.link_assessments(link) == rows  # what the viewer page reads through its link
    assert sql.assessments(uuid.uuid4().hex) == []  # another result has none


def test_feedback_for_an_unknown_card_or_a_card_without_a_link_is_attached_to_nothing(sql):
    result = uuid.uuid4().hex
    sql.put_result(result, b"analysis", ttl_s=600)
    _, link = shown(sql, result)
    problem = str(uuid.uuid4())
    sql.record_cards("svc", [(problem, "info")])  # a problem card: no viewer link
    forged = str(uuid.uuid4())
    sql.record_cards("svc", [IssuedCard(forged, "critical", "no-such-link")])  # a link the store never issued
    for card in (str(uuid.uuid4()), problem, forged):  # the first was never issued
        assert sql.add_feedback([feedback_row(card, "accepted", "2026-11-22T10:05:00+00:00")]) == ["accepted"]
    assert sql.assessments(result) == [] and sql.link_assessments(link) == []
    with sql.engine.connect() as db:
        from sqlalchemy import select

        from cds_service.store import schema

        keys = db.execute(select(schema.card.c.result_key).where(schema.card.c.uuid.in_([problem, forged]))).all()
    assert keys == [(None,), (None,)]


def test_an_expired_link_reads_no_assessments(tmp_path):
    now = [1_000_000.0]
    engine = engine_for(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    upgrade(engine)
    sql = SqlStore(engine, clock=lambda: now[0])
    sql.put_result("r", b"analysis", ttl_s=6000)
    card, link = shown(sql, "r")
    sql.add_feedback([feedback_row(card, "accepted", "2026-11-22T10:05:00+00:00")])
    assert len(sql.link_assessments(link)) == 1
    now[0] += 601
    assert sql.link_assessments(link) == [] and len(sql.assessments("r")) == 1  # kept with the result


def test_the_durable_store_records_and_replays_the_result_of_a_card(tmp_path: Path):
    """The outbox interface is kept: old two-field card entries and new ones replay alike."""
    engine = engine_for(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    upgrade(engine)
    durable = DurableSqlStore(engine, tmp_path / "outbox", timeout_s=5.0)
    try:
        durable.put_result("r", b"analysis", ttl_s=600)
        card, link = shown(durable, "r")
        durable.add_feedback([feedback_row(card, "accepted", "2026-11-22T10:05:00+00:00")])
        assert [row.card for row in durable.assessments("r")] == [card]
        assert [row.card for row in durable.link_assessments(link)] == [card]
        from cds_service.store.outbox import Entry

        replayed = str(uuid.uuid4())
        durable._apply(Entry(1, "cards", None, {"service": "svc", "cards": [[replayed, "info"]]}, None))
        late = str(uuid.uuid4())
        entry = {"service": "svc", "cards": [list(IssuedCard(late, "warning", link, None, "ImagingStudy/s-1"))]}
        durable._apply(Entry(2, "cards", None, entry, None))
        durable.add_feedback([feedback_row(late, "accepted", "2026-11-22T11:00:00+00:00")])
        assert [row.card for row in durable.assessments("r")] == [card, late]
    finally:
        durable.close()
