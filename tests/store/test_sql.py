"""The shared store on both engines (SQLite file, real PostgreSQL): TTLs, leases, replays, feedback, migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import numpy as np
import pytest

from cds_service.store import codec
from cds_service.store.migrate import current, upgrade
from cds_service.store.sql import SqlStore, engine_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[tuple[SqlStore, Clock]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.url
    engine = engine_for(url)
    upgrade(engine)
    clock = Clock()
    sql = SqlStore(engine, clock=clock)
    sql.clear_results()
    yield sql, clock
    sql.purge_expired()
    engine.dispose()


def test_a_result_lives_until_its_ttl(store):
    sql, clock = store
    key = f"k-{clock.now}-{id(sql)}"
    sql.put_result(key, b"payload", ttl_s=60)
    assert sql.get_result(key) == b"payload"
    clock.now += 61
    assert sql.get_result(key) is None


def test_a_viewer_link_dies_with_its_result_or_its_own_ttl(store):
    sql, clock = store
    sql.put_result("r1", b"image", ttl_s=600)
    link = sql.put_viewer_link("r1", ttl_s=60)
    assert sql.get_viewer_payload(link) == b"image"
    assert sql.get_viewer_payload("not-a-link") is None
    clock.now += 61
    assert sql.get_viewer_payload(link) is None


def test_a_lease_is_exclusive_until_released_or_lapsed(store):
    sql, clock = store
    assert sql.claim("study", "replica-1", lease_s=30)
    assert not sql.claim("study", "replica-2", lease_s=30)
    assert sql.claim("study", "replica-1", lease_s=30)  # renewing one's own lease
    assert sql.lease_holder("study") == "replica-1"
    sql.release("study", "replica-2")  # not the holder: nothing happens
    assert sql.lease_holder("study") == "replica-1"
    clock.now += 31  # replica 1 died: its lease lapses, another takes over
    assert sql.lease_holder("study") is None
    assert sql.claim("study", "replica-2", lease_s=30)
    sql.release("study", "replica-2")
    assert sql.claim("study", "replica-1", lease_s=30)


def test_a_jti_is_accepted_once_until_it_expires(store):
    sql, clock = store
    jti = f"jti-{clock.now}-{id(sql)}"
    assert sql.remember_jti("ehr", jti, clock.now + 300)
    assert not sql.remember_jti("ehr", jti, clock.now + 300)
    assert sql.remember_jti("other-ehr", jti, clock.now + 300)  # per issuer
    clock.now += 301
    assert sql.remember_jti("ehr", jti, clock.now + 300)  # expired entries do not block forever


def test_feedback_is_stored_once_and_joined_with_its_card(store):
    sql, clock = store
    card = f"card-{clock.now}-{id(sql)}"
    sql.record_cards("svc", [(card, "critical"), (card, "critical")])
    row = {
        "key": f"fb-{card}",
        "service": "svc",
        "card": card,
        "outcome": "accepted",
        "reason": None,
        "body": "{}",
        "outcome_timestamp": "2026-11-23T10:00:00+00:00",
    }
    assert sql.add_feedback([row]) == ["accepted"]
    assert sql.add_feedback([row]) == []  # the EHR retried
    with sql.engine.connect() as db:  # this card's join (other tests share the PostgreSQL database)
        from sqlalchemy import select

        from cds_service.store import schema

        joined = db.execute(
            select(schema.card.c.indicator, schema.feedback.c.outcome)
            .select_from(schema.feedback.join(schema.card, schema.card.c.uuid == schema.feedback.c.card))
            .where(schema.card.c.uuid == card)
        ).all()
    assert joined == [("critical", "accepted")]


def test_an_analysis_survives_the_round_trip(analysis):
    decoded = codec.decode(codec.encode(analysis))
    assert decoded.findings == analysis.findings
    assert decoded.chart == analysis.chart and decoded.image_shape == analysis.image_shape
    assert np.array_equal(decoded.display, analysis.display) and decoded.heat.dtype == np.uint8
    assert np.array_equal(decoded.heat, analysis.heat)
    for before, after in zip(analysis.heatmaps, decoded.heatmaps, strict=True):
        assert np.array_equal(before.cam, after.cam) and before.box == after.box


def test_a_feedback_file_from_before_migrations_is_adopted_not_lost(tmp_path):
    path = tmp_path / "feedback.sqlite3"
    with sqlite3.connect(path) as db:  # what FeedbackStore wrote before the shared store existed
        db.executescript(
            """
            CREATE TABLE card (uuid TEXT PRIMARY KEY, service TEXT NOT NULL, indicator TEXT NOT NULL,
                issued TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
            CREATE TABLE feedback (key TEXT PRIMARY KEY, service TEXT NOT NULL, card TEXT NOT NULL,
                outcome TEXT NOT NULL, reason TEXT, body TEXT NOT NULL, outcome_timestamp TEXT NOT NULL,
                received TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
            INSERT INTO card (uuid, service, indicator) VALUES ('old-card', 'svc', 'warning');
            INSERT INTO feedback (key, service, card, outcome, body, outcome_timestamp)
                VALUES ('old', 'svc', 'old-card', 'overridden', '{}', '2026-01-01');
            """
        )
    engine = engine_for(f"sqlite:///{path}")
    assert current(engine) is None
    upgrade(engine)
    upgrade(engine)  # idempotent
    assert current(engine) == "0003"
    assert SqlStore(engine).feedback_counts() == ({"warning": 1}, [("warning", "overridden", 1)])


async def test_writing_a_result_deletes_expired_rows(store, analysis):
    """Expired results (megabytes each) do not pile up: a replica writing a result purges them."""
    from sqlalchemy import select

    from cds_service.domain import ResultKey
    from cds_service.store import AsyncStore, schema

    sql, clock = store
    sql.put_result("expired", b"x" * 1000, ttl_s=10)
    clock.now += 11
    key = ResultKey("file:///s", "1.2", "1.2.3", "pat", "", "fracture@1,garden@1")
    await AsyncStore(sql).put(key, analysis)
    with sql.engine.connect() as db:
        keys = set(db.execute(select(schema.result.c.key)).scalars())
    assert "expired" not in keys and key.digest() in keys


def test_a_result_stored_before_heat_levels_is_still_read(analysis):
    """Format 1 (heat as float16 in [0, 1]) rows stay readable for their TTL after an upgrade."""
    import io
    import json

    with np.load(io.BytesIO(codec.encode(analysis)), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["meta"].tobytes())
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "format": 1}).encode(), np.uint8)
    arrays["heat"] = (analysis.heat.astype(np.float32) / 255 + 0.5 / 255).astype(np.float16)  # mid-level values
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    decoded = codec.decode(buffer.getvalue())
    assert decoded.heat.dtype == np.uint8 and np.array_equal(decoded.heat, analysis.heat)
    with pytest.raises(ValueError, match="unknown result format"):
        arrays["meta"] = np.frombuffer(json.dumps({**meta, "format": 99}).encode(), np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        codec.decode(buffer.getvalue())


def test_a_low_suspicion_survives_the_round_trip_and_is_derived_for_older_results(analysis):
    """A replica that waited for another's result showed its low suspicions as suspected fractures."""
    import dataclasses
    import io
    import json

    fracture_model = dataclasses.replace(
        analysis.findings.fracture_model, operating_threshold=0.07, high_specificity_threshold=0.62
    )
    hips = [
        dataclasses.replace(analysis.findings.hips[0], fracture_probability=0.9, fractured=True, low_suspicion=False),
        dataclasses.replace(analysis.findings.hips[1], fracture_probability=0.3, fractured=True, low_suspicion=True),
    ]
    findings = dataclasses.replace(analysis.findings, hips=hips, fracture_model=fracture_model)
    low = dataclasses.replace(analysis, findings=findings)
    assert codec.decode(codec.encode(low)).findings == findings
    with np.load(io.BytesIO(codec.encode(low)), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["meta"].tobytes())
    for hip in meta["hips"]:
        del hip["low_suspicion"]  # stored before the field existed
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    assert [hip.low_suspicion for hip in codec.decode(buffer.getvalue()).findings.hips] == [False, True]
