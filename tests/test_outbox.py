"""The store that never loses a write, against a real PostgreSQL stopped, restarted and frozen (SIGSTOP).

:class:`~cds_service.store.durable.DurableSqlStore` bounds every call and keeps what the database
cannot take in the outbox (:mod:`cds_service.store.outbox`), replayed in order once it answers. A
PostgreSQL of this module's own: the tests stop and freeze it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from cds_service.store import schema
from cds_service.store.durable import DurableSqlStore, StoreUnavailableError
from cds_service.store.migrate import upgrade
from cds_service.store.outbox import Outbox
from cds_service.store.sql import SqlStore, engine_for
from tests.conftest import require
from tests.servers.postgres import PostgresServer, available

TIMEOUT_S = 0.5
MARGIN_S = 0.5  # a loaded 2-core machine


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    require(available(), "PostgreSQL is not installed (run .ci/install-servers.sh)")
    server = PostgresServer()
    server.start()
    upgrade(engine_for(server.url))
    yield server
    thaw(server)
    if not (server.data / "postmaster.pid").exists():
        server.start()
    server.stop()
    server.remove()


@pytest.fixture
def durable(postgres: PostgresServer, tmp_path: Path) -> Iterator[Callable[..., DurableSqlStore]]:
    made: list[DurableSqlStore] = []

    def make(folder: Path = tmp_path / "outbox") -> DurableSqlStore:
        store = DurableSqlStore(engine_for(postgres.url, timeout_s=TIMEOUT_S), folder, timeout_s=TIMEOUT_S)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def direct(postgres: PostgresServer) -> Iterator[SqlStore]:
    """A plain store on the same database: what every other replica sees."""
    sql = SqlStore(engine_for(postgres.url))
    yield sql
    sql.close()


def postgres_pids(server: PostgresServer) -> list[int]:
    """The postmaster and its children (backends, checkpointer, …)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def thaw(server: PostgresServer) -> None:
    if (server.data / "postmaster.pid").exists():
        for pid in postgres_pids(server):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


@contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """PostgreSQL hung: every process stopped (connections are accepted by the kernel, nothing answers)."""
    pids = postgres_pids(server)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@contextmanager
def stopped(server: PostgresServer) -> Iterator[None]:
    server.stop()
    try:
        yield
    finally:
        server.start()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def feedback_row(card: str, outcome: str = "accepted") -> dict:
    return {
        "key": f"fb-{card}-{outcome}",
        "service": "svc",
        "card": card,
        "outcome": outcome,
        "reason": None,
        "body": "{}",
        "outcome_timestamp": "2026-11-23T10:00:00+00:00",
    }


def joined(sql: SqlStore, card: str) -> list[tuple[str, str]]:
    with sql.engine.connect() as db:
        return [
            tuple(row)
            for row in db.execute(
                select(schema.card.c.indicator, schema.feedback.c.outcome)
                .select_from(schema.feedback.join(schema.card, schema.card.c.uuid == schema.feedback.c.card))
                .where(schema.card.c.uuid == card)
            ).all()
        ]


# The outbox file ------------------------------------------------------------------------------------
def test_an_outbox_keeps_its_entries_in_order_across_processes_and_is_held_by_one_at_a_time(tmp_path: Path):
    first = Outbox.claim(tmp_path)
    assert first is not None and first.path.name == "outbox-0.sqlite3"
    second = Outbox.claim(tmp_path)
    assert second is not None and second.path != first.path  # locked: another process gets another file
    for n in range(3):
        first.append("cards", None, {"n": n})
    first.append("result", "k", {"expires_at": 1.0}, b"\x00payload")
    assert first.find("result", "k").payload == b"\x00payload"
    first.close()  # the process died with entries queued
    second.close()
    adopted = Outbox.claim(tmp_path, only_with_entries=True)  # the next process takes the non-empty one
    assert adopted.path.name == "outbox-0.sqlite3" and [e.meta.get("n") for e in adopted.head()] == [0, 1, 2, None]
    fresh = Outbox.claim(tmp_path)  # outbox-0 is held by the adopter: a free one
    assert fresh.path.name == "outbox-1.sqlite3" and len(fresh) == 0
    adopted.close()
    fresh.close()
    assert (tmp_path / "outbox-0.sqlite3").stat().st_mode & 0o077 == 0  # results are patient images


# PostgreSQL stopped ------------------------------------------------------------------------------
def test_writes_while_postgresql_is_stopped_are_replayed_after_and_feedback_joins_its_card(
    postgres: PostgresServer, durable, direct: SqlStore
):
    store = durable()
    card, link_card = f"card-{time.time()}", f"link-{time.time()}"
    with stopped(postgres):
        _, elapsed = timed(lambda: store.record_cards("svc", [(card, "critical")]))
        assert elapsed < TIMEOUT_S + MARGIN_S and not store.available
        assert store.add_feedback([feedback_row(card)]) == ["accepted"]
        assert store.add_feedback([feedback_row(card)]) == []  # the EHR retried: queued once
        store.put_result("r-outage", b"image", ttl_s=600)
        link = store.put_viewer_link("r-outage", ttl_s=600)
        assert store.get_result("r-outage") == b"image"  # this replica answers from its outbox meanwhile
        assert store.get_viewer_payload(link) == b"image"
        assert store.claim("study", "me", lease_s=5)  # no lease without a database: analyse here
        assert store.lease_holder("study") is None
        started = time.perf_counter()
        with pytest.raises(StoreUnavailableError):
            store.remember_jti("ehr", card, 1e12)
        assert time.perf_counter() - started < 0.1  # the breaker is open: no wait at all
        store.record_cards("svc", [(link_card, "warning")])
        assert store.backlog() == 5
    wait_until(lambda: store.backlog() == 0, 10, "the outbox was not replayed")
    assert store.available
    assert joined(direct, card) == [("critical", "accepted")]  # every other replica sees it, joined
    assert direct.get_viewer_payload(link) == b"image"
    with direct.engine.connect() as db:
        assert db.execute(select(schema.card.c.uuid).where(schema.card.c.uuid == link_card)).scalar() == link_card


def test_writes_queue_behind_the_outbox_until_it_is_replayed(postgres: PostgresServer, durable, direct: SqlStore):
    store = durable()
    card = f"order-{time.time()}"
    with stopped(postgres):
        store.record_cards("svc", [(card, "info")])
        store._wake.clear()
        store._down.clear()  # as if the database answered again before the replay thread ran
        store.add_feedback([feedback_row(card, "overridden")])  # behind the card: queued, not written first
        assert store.backlog() == 2
    wait_until(lambda: store.backlog() == 0, 10, "the outbox was not replayed")
    assert joined(direct, card) == [("info", "overridden")]


def test_an_outbox_left_by_a_dead_process_is_replayed_by_the_next(
    postgres: PostgresServer, durable, direct: SqlStore, tmp_path: Path
):
    folder = tmp_path / "left"
    card = f"orphan-{time.time()}"
    with stopped(postgres):
        dead = DurableSqlStore(engine_for(postgres.url, timeout_s=TIMEOUT_S), folder, timeout_s=TIMEOUT_S)
        dead.record_cards("svc", [(card, "critical")])
        dead.close()  # its entries stay in the file
    heir = durable(folder)
    wait_until(lambda: heir.backlog() == 0, 10, "the adopted outbox was not replayed")
    with direct.engine.connect() as db:
        assert db.execute(select(schema.card.c.uuid).where(schema.card.c.uuid == card)).scalar() == card


# PostgreSQL frozen ------------------------------------------------------------------------------
def test_a_frozen_postgresql_costs_one_timeout_then_nothing_and_loses_nothing(
    postgres: PostgresServer, durable, direct: SqlStore
):
    store = durable()
    store.put_result("before-freeze", b"old", ttl_s=600)
    card = f"frozen-{time.time()}"
    with frozen(postgres):
        calls = {
            "get_result": lambda: store.get_result("before-freeze"),
            "record_cards": lambda: store.record_cards("svc", [(card, "warning")]),
            "add_feedback": lambda: store.add_feedback([feedback_row(card)]),
            "claim": lambda: store.claim("frozen-study", "me", 5),
            "put_result": lambda: store.put_result("during-freeze", b"new", ttl_s=600),
        }
        for name, call in calls.items():
            _, elapsed = timed(call)
            assert elapsed < TIMEOUT_S + MARGIN_S, (name, elapsed)
        assert not store.available and store.backlog() == 3
        assert store.get_result("during-freeze") == b"new"
    wait_until(lambda: store.backlog() == 0, 20, "the outbox was not replayed after the thaw")
    assert joined(direct, card) == [("warning", "accepted")]
    assert direct.get_result("during-freeze") == b"new"


def test_a_row_the_database_refuses_does_not_block_the_queue(postgres: PostgresServer, durable, direct: SqlStore):
    store = durable()
    card = f"after-poison-{time.time()}"
    with stopped(postgres):
        store.add_feedback([{**feedback_row("poison"), "outcome": None}])  # NOT NULL: refused at replay
        store.record_cards("svc", [(card, "info")])
    wait_until(lambda: store.backlog() == 0, 10, "the queue is stuck behind a refused row")
    with direct.engine.connect() as db:
        assert db.execute(select(schema.card.c.uuid).where(schema.card.c.uuid == card)).scalar() == card
