"""The shared store: one interface, two engines (SQLite embedded, PostgreSQL when configured).

    results (TTL) · viewer links · in-flight leases · cards + feedback (joined to results) · JWT jti replay cache

Several replicas pointing at one PostgreSQL (``HIPCAD_DATABASE_URL``) share everything here, so a
viewer link, a replayed JWT, feedback and an analysed result mean the same on every pod. Without a
URL the store is a SQLite file (``HIPCAD_FEEDBACK_DB``), which is all one process needs.

:class:`AsyncStore` is what the service uses: each query runs in a worker thread (the event loop
never waits on the database), and decoded results are kept in a small per-process LRU in front of
the table (results are immutable per key, and expiry is honoured locally too). With a database URL
the SQL store is :class:`~cds_service.store.durable.DurableSqlStore`: bounded calls, and an outbox
that keeps every write made while the database is unreachable and replays it after.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cds_service.domain import Analysis, ResultKey
from cds_service.store import codec
from cds_service.store.durable import DurableSqlStore, StoreUnavailableError
from cds_service.store.migrate import upgrade
from cds_service.store.sql import AssessmentRow, IssuedCard, SqlStore, engine_for

if TYPE_CHECKING:
    from cds_service.settings import Settings

__all__ = [
    "AssessmentRow",
    "AsyncStore",
    "DurableSqlStore",
    "IssuedCard",
    "SqlStore",
    "StoreUnavailableError",
    "database_url",
    "open_store",
    "outbox_dir",
    "replica_id",
]


#: Expired rows are deleted by the replica that writes a result, at most this often.
PURGE_EVERY_S = 60.0


@dataclass(frozen=True)
class _Local:
    key: ResultKey
    analysis: Analysis
    expires: float


def replica_id() -> str:
    """This process's name as a lease owner: host, pid and a random suffix (unique across restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def database_url(settings: Settings) -> str:
    """``HIPCAD_DATABASE_URL``, else the SQLite file ``HIPCAD_FEEDBACK_DB``."""
    return settings.database_url or f"sqlite:///{settings.feedback_db}"


def outbox_dir(settings: Settings) -> Path:
    """``HIPCAD_OUTBOX_DIR``, else ``outbox/`` beside the SQLite file ``HIPCAD_FEEDBACK_DB``."""
    return settings.outbox_dir or settings.feedback_db.parent / "outbox"


def open_store(settings: Settings, migrate: bool = True) -> AsyncStore:
    """The store the settings name, migrated to the shipped schema (unless ``migrate`` is False).

    A database URL (PostgreSQL, a network dependency) gets :class:`DurableSqlStore`: calls bounded by
    ``HIPCAD_DATABASE_TIMEOUT_S`` and an outbox for the writes made while it is unreachable. The
    embedded SQLite file is local to the process: there is no outage to outlast.
    """
    if not settings.database_url:
        engine = engine_for(database_url(settings))
        if migrate:
            upgrade(engine)
        return AsyncStore(SqlStore(engine), result_ttl_s=settings.result_ttl_s)
    engine = engine_for(settings.database_url, timeout_s=settings.database_timeout_s)
    if migrate:
        upgrade(engine)
    sql = DurableSqlStore(engine, outbox_dir(settings), timeout_s=settings.database_timeout_s)
    return AsyncStore(sql, result_ttl_s=settings.result_ttl_s)


class AsyncStore:
    """The service's view of the store: async, with a per-process LRU of decoded results."""

    def __init__(self, sql: SqlStore, result_ttl_s: float = 3600, local_entries: int = 32) -> None:
        self.sql = sql
        self.result_ttl_s = result_ttl_s
        self.local_entries = local_entries
        self.owner = replica_id()
        self._local: OrderedDict[str, _Local] = OrderedDict()  # key digest → decoded result
        self._purged_at = 0.0

    def local_keys(self) -> list[ResultKey]:
        """Keys of the results this process holds decoded (tests and diagnostics)."""
        now = time.time()
        return [entry.key for entry in self._local.values() if entry.expires > now]

    def remember(self, key: ResultKey, analysis: Analysis) -> None:
        """Hold ``analysis`` in this process (an LRU of ``local_entries``, for the result TTL)."""
        digest = key.digest()
        self._local[digest] = _Local(key, analysis, time.time() + self.result_ttl_s)
        self._local.move_to_end(digest)
        while len(self._local) > self.local_entries:
            self._local.popitem(last=False)

    def local(self, key: ResultKey) -> Analysis | None:
        """The decoded result if this process holds it (no database call)."""
        entry = self._local.get(key.digest())
        if entry is None or entry.expires <= time.time():
            return None
        return entry.analysis

    async def get(self, key: ResultKey) -> Analysis | None:
        if (analysis := self.local(key)) is not None:
            return analysis

        def read() -> Analysis | None:
            payload = self.sql.get_result(key.digest())
            return None if payload is None else codec.decode(payload)

        analysis = await asyncio.to_thread(read)
        if analysis is not None:
            self.remember(key, analysis)
        return analysis

    async def put(self, key: ResultKey, analysis: Analysis) -> None:
        """Store ``analysis``; expired rows (results, links, leases, jti) are deleted here at most once a minute."""
        self.remember(key, analysis)
        purge = time.time() - self._purged_at >= PURGE_EVERY_S
        if purge:
            self._purged_at = time.time()

        def write() -> None:
            self.sql.put_result(key.digest(), codec.encode(analysis), self.result_ttl_s)
            if purge:
                try:
                    self.sql.purge_expired()
                except StoreUnavailableError:  # the result is queued in the outbox; purge next time
                    self._purged_at = 0.0

        await asyncio.to_thread(write)

    async def clear_results(self) -> None:
        """Forget every result, here and in the database (benchmarks' cold runs, tests)."""
        self._local.clear()
        await asyncio.to_thread(self.sql.clear_results)

    async def claim(self, key: ResultKey, lease_s: float) -> bool:
        return await asyncio.to_thread(self.sql.claim, key.digest(), self.owner, lease_s)

    async def release(self, key: ResultKey) -> None:
        await asyncio.to_thread(self.sql.release, key.digest(), self.owner)

    async def lease_holder(self, key: ResultKey) -> str | None:
        return await asyncio.to_thread(self.sql.lease_holder, key.digest())

    async def model_contract(self, model: str) -> str | None:
        """The last known served versions of ``model`` (the result key's label), None when never read."""
        return await asyncio.to_thread(self.sql.model_contract, model)

    async def put_model_contract(self, model: str, label: str) -> None:
        await asyncio.to_thread(self.sql.put_model_contract, model, label)

    async def viewer_link(self, key: ResultKey, ttl_s: float) -> str:
        return await asyncio.to_thread(self.sql.put_viewer_link, key.digest(), ttl_s)

    async def viewer_analysis(self, link_id: str) -> Analysis | None:
        def read() -> Analysis | None:
            payload = self.sql.get_viewer_payload(link_id)
            return None if payload is None else codec.decode(payload)

        return await asyncio.to_thread(read)

    async def assessments(self, link_id: str) -> list[AssessmentRow]:
        """The clinicians' assessments (feedback) of the result the viewer link ``link_id`` shows."""
        return await asyncio.to_thread(self.sql.link_assessments, link_id)

    async def ping(self) -> bool:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.sql.ping), 2.0)
        except Exception:  # readiness: any failure is "not ready"
            return False

    def close(self) -> None:
        self.sql.close()
