"""The shared store on SQLAlchemy Core: SQLite (embedded default) or PostgreSQL (psycopg 3).

Every method is synchronous and short; the service calls them through :class:`AsyncStore`, which
runs them in worker threads so no query ever blocks the event loop. Upserts use each dialect's
``INSERT … ON CONFLICT``, so concurrent replicas never race on check-then-insert.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine, Select, create_engine, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite

from cds_service.store import schema


def engine_for(url: str, timeout_s: float | None = None) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``), pooled, pre-pinged.

    ``timeout_s``: PostgreSQL's connect timeout (libpq ``connect_timeout``, whole seconds, at least 2)
    and ``statement_timeout``, and the pool's checkout wait: no call waits on the server for long. A
    server that is frozen answers nothing, not even a timeout: :class:`~cds_service.store.durable.
    DurableSqlStore` bounds each call on the client side too.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 5, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _wal(connection, _record) -> None:  # readers never wait for the writer
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if timeout_s is None:
        return create_engine(url, pool_size=8, max_overflow=4, pool_pre_ping=True, pool_timeout=5)
    connect_args = {
        "connect_timeout": max(2, math.ceil(timeout_s)),
        "options": f"-c statement_timeout={max(1, int(timeout_s * 1000))}",
    }
    return create_engine(
        url, pool_size=8, max_overflow=4, pool_pre_ping=True, pool_timeout=timeout_s, connect_args=connect_args
    )


class IssuedCard(NamedTuple):
    """A card as recorded when issued. A finding card also names the viewer link it carries (the
    store resolves it to the result the card shows) and the FHIR resources an assessment of it refers
    to: the DiagnosticReport its suggestion creates and the analysed ImagingStudy (relative references).
    A plain ``(uuid, indicator)`` tuple is an IssuedCard naming nothing else."""

    uuid: str
    indicator: str
    viewer_link: str | None = None
    report: str | None = None
    imaging_study: str | None = None


@dataclass(frozen=True)
class AssessmentRow:
    """One stored feedback entry joined with the card it is about and that card's result."""

    key: str
    service: str
    card: str
    indicator: str
    outcome: str
    body: str
    outcome_timestamp: str
    report: str | None
    imaging_study: str | None


def new_link_id() -> str:
    """A random viewer result id (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


class SqlStore:
    """Results (TTL), viewer links, in-flight leases, cards and feedback, and the JWT replay cache."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert

    @property
    def engine_name(self) -> str:
        return self.engine.dialect.name

    def ping(self) -> bool:
        with self.engine.connect() as db:
            return db.execute(select(1)).scalar() == 1

    # Results ----------------------------------------------------------------------------------
    def put_result(self, key: str, payload: bytes, ttl_s: float) -> None:
        now = self.clock()
        statement = self._insert(schema.result).values(key=key, payload=payload, created_at=now, expires_at=now + ttl_s)
        statement = statement.on_conflict_do_update(
            index_elements=["key"], set_={"payload": payload, "created_at": now, "expires_at": now + ttl_s}
        )
        with self.engine.begin() as db:
            db.execute(statement)

    def get_result(self, key: str) -> bytes | None:
        with self.engine.connect() as db:
            row = db.execute(
                select(schema.result.c.payload).where(
                    schema.result.c.key == key, schema.result.c.expires_at > self.clock()
                )
            ).first()
        return None if row is None else bytes(row[0])

    # Viewer links -----------------------------------------------------------------------------
    def put_viewer_link(self, result_key: str, ttl_s: float, link_id: str | None = None) -> str:
        """A new random result id (128 bits) for the viewer, pointing at ``result_key``.

        ``link_id``: an id issued earlier (an outbox replay); writing it again changes nothing.
        """
        link_id = link_id or new_link_id()
        statement = self._insert(schema.viewer_link).values(
            id=link_id, result_key=result_key, expires_at=self.clock() + ttl_s
        )
        with self.engine.begin() as db:
            db.execute(statement.on_conflict_do_nothing())
        return link_id

    def get_viewer_payload(self, link_id: str) -> bytes | None:
        now = self.clock()
        link, result = schema.viewer_link, schema.result
        with self.engine.connect() as db:
            row = db.execute(
                select(result.c.payload)
                .join(link, link.c.result_key == result.c.key)
                .where(link.c.id == link_id, link.c.expires_at > now, result.c.expires_at > now)
            ).first()
        return None if row is None else bytes(row[0])

    # Model contract ---------------------------------------------------------------------------
    def put_model_contract(self, model: str, label: str) -> None:
        """The served model versions of ``model`` (the result key's label), as last read from Triton."""
        statement = self._insert(schema.model_contract).values(model=model, label=label, updated_at=self.clock())
        statement = statement.on_conflict_do_update(
            index_elements=["model"], set_={"label": label, "updated_at": self.clock()}
        )
        with self.engine.begin() as db:
            db.execute(statement)

    def model_contract(self, model: str) -> str | None:
        """The last known label of ``model`` (None before any replica read it from Triton)."""
        with self.engine.connect() as db:
            return db.execute(
                select(schema.model_contract.c.label).where(schema.model_contract.c.model == model)
            ).scalar()

    # Leases -----------------------------------------------------------------------------------
    def claim(self, key: str, owner: str, lease_s: float) -> bool:
        """Take the in-flight lease on ``key`` for ``owner``; False while another owner's lease is live."""
        now = self.clock()
        table = schema.lease
        statement = self._insert(table).values(key=key, owner=owner, expires_at=now + lease_s)
        statement = statement.on_conflict_do_update(
            index_elements=["key"],
            set_={"owner": owner, "expires_at": now + lease_s},
            where=(table.c.expires_at <= now) | (table.c.owner == owner),
        )
        with self.engine.begin() as db:
            db.execute(statement)
            holder = db.execute(select(table.c.owner).where(table.c.key == key)).scalar()
        return holder == owner

    def release(self, key: str, owner: str) -> None:
        with self.engine.begin() as db:
            db.execute(delete(schema.lease).where(schema.lease.c.key == key, schema.lease.c.owner == owner))

    def lease_holder(self, key: str) -> str | None:
        with self.engine.connect() as db:
            return db.execute(
                select(schema.lease.c.owner).where(schema.lease.c.key == key, schema.lease.c.expires_at > self.clock())
            ).scalar()

    # JWT replay cache -------------------------------------------------------------------------
    def remember_jti(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Record (issuer, jti); False when it was already there and has not expired (a replay)."""
        now = self.clock()
        table = schema.jwt_replay
        statement = self._insert(table).values(issuer=issuer, jti=jti, expires_at=expires_at)
        # An expired row may be reused (the token it belonged to can no longer be presented anyway).
        statement = statement.on_conflict_do_update(
            index_elements=["issuer", "jti"], set_={"expires_at": expires_at}, where=table.c.expires_at <= now
        ).returning(table.c.jti)  # a row back: inserted (or an expired one reused); none: a live replay
        with self.engine.begin() as db:
            return db.execute(statement).first() is not None

    # Cards and feedback -----------------------------------------------------------------------
    def record_cards(self, service: str, cards: Iterable[tuple[str | None, ...]]) -> None:
        """Issued cards, each an :class:`IssuedCard` (or a plain ``(uuid, indicator)`` tuple).

        A card's viewer link is resolved to its result's key in the same transaction (a link the
        store does not hold leaves the card without a result: its feedback is counted, never shown).
        """
        issued = [IssuedCard(*card) for card in cards]
        if not issued:
            return
        links = {card.viewer_link for card in issued if card.viewer_link}
        with self.engine.begin() as db:
            results = (
                dict(
                    db.execute(
                        select(schema.viewer_link.c.id, schema.viewer_link.c.result_key).where(
                            schema.viewer_link.c.id.in_(links)
                        )
                    ).all()
                )
                if links
                else {}
            )
            rows = [
                {
                    "uuid": card.uuid,
                    "service": service,
                    "indicator": card.indicator,
                    "result_key": results.get(card.viewer_link or ""),
                    "report": card.report,
                    "imaging_study": card.imaging_study,
                }
                for card in issued
            ]
            db.execute(self._insert(schema.card).on_conflict_do_nothing(), rows)

    def add_feedback(self, rows: list[dict]) -> list[str]:
        """Insert feedback rows (dicts of the feedback table); returns the outcomes of the new ones."""
        new: list[str] = []
        table = schema.feedback
        with self.engine.begin() as db:
            for row in rows:  # one statement per row: RETURNING says which ones were new
                inserted = self._insert(table).values(**row).on_conflict_do_nothing().returning(table.c.key)
                if db.execute(inserted).first() is not None:
                    new.append(row["outcome"])
        return new

    def feedback_counts(self) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
        """Cards issued per indicator, and distinct cards per (indicator, outcome) joined with feedback."""
        card, fb = schema.card, schema.feedback
        with self.engine.connect() as db:
            issued = dict(db.execute(select(card.c.indicator, func.count()).group_by(card.c.indicator)).all())
            outcomes = db.execute(
                select(card.c.indicator, fb.c.outcome, func.count(func.distinct(fb.c.card)))
                .select_from(fb.join(card, card.c.uuid == fb.c.card))
                .group_by(card.c.indicator, fb.c.outcome)
            ).all()
        return {k: int(v) for k, v in issued.items()}, [(i, o, int(n)) for i, o, n in outcomes]

    @staticmethod
    def _assessments() -> Select:
        card, fb = schema.card, schema.feedback
        return (
            select(
                fb.c.key,
                fb.c.service,
                fb.c.card,
                card.c.indicator,
                fb.c.outcome,
                fb.c.body,
                fb.c.outcome_timestamp,
                card.c.report,
                card.c.imaging_study,
            )
            .select_from(fb.join(card, card.c.uuid == fb.c.card))
            .order_by(fb.c.outcome_timestamp, fb.c.key)
        )

    def assessments(self, result_key: str) -> list[AssessmentRow]:
        """Every feedback entry on a card that showed the result ``result_key``, oldest first (a card
        shown more than once, or assessed again, gives one row per distinct entry)."""
        with self.engine.connect() as db:
            rows = db.execute(self._assessments().where(schema.card.c.result_key == result_key)).all()
        return [AssessmentRow(*row) for row in rows]

    def link_assessments(self, link_id: str) -> list[AssessmentRow]:
        """:meth:`assessments` of the result a live viewer link shows ([] for an unknown or expired link)."""
        link = schema.viewer_link
        live = select(link.c.result_key).where(link.c.id == link_id, link.c.expires_at > self.clock())
        with self.engine.connect() as db:
            rows = db.execute(self._assessments().where(schema.card.c.result_key == live.scalar_subquery())).all()
        return [AssessmentRow(*row) for row in rows]

    def clear_results(self) -> None:
        """Forget every stored result and viewer link (benchmarks' cold runs, tests)."""
        with self.engine.begin() as db:
            db.execute(delete(schema.viewer_link))
            db.execute(delete(schema.result))

    # Housekeeping -----------------------------------------------------------------------------
    def purge_expired(self) -> int:
        """Delete expired results, links, leases and replay entries; returns the rows removed."""
        now = self.clock()
        removed = 0
        with self.engine.begin() as db:
            for table in (schema.result, schema.viewer_link, schema.lease, schema.jwt_replay):
                removed += db.execute(delete(table).where(table.c.expires_at <= now)).rowcount
        return removed

    def close(self) -> None:
        self.engine.dispose()
