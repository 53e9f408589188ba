"""The store that never loses a write: bounded database calls, an outbox while the database is away.

    call ──► database up? ──► worker thread, answer within ``timeout_s`` ──► done
                 │ no (or it failed / timed out: the breaker opens)
                 ▼
             writes: the outbox (local, durable)        reads: the outbox, else "nothing"
             leases: "analyse here"                     jti: raise at once (the caller decides)

A background thread probes the database while it is away and replays the outbox in order once it
answers (every write is idempotent: upserts and ``ON CONFLICT DO NOTHING``), so a card issued during
an outage is in the ``card`` table afterwards, its feedback joins it, and its viewer link opens on
every replica. Until then this replica answers that link from its outbox. While the outbox holds
entries, new writes queue behind them: the database receives them in the order they were made.

Every call runs in this store's own worker threads and is waited on at most ``timeout_s``: a frozen
PostgreSQL (SIGSTOP, a dead network path) accepts connections and then says nothing, which no
server-side timeout can bound. The first call that times out opens the breaker; later calls do not
wait until the probe has seen the database answer again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from cds_service.metrics import STORE_ERRORS
from cds_service.store.outbox import Entry, Outbox
from cds_service.store.sql import AssessmentRow, IssuedCard, SqlStore, new_link_id

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the replay thread probes an absent database (and replays, once it answers), seconds.
PROBE_EVERY_S = 0.5


class StoreUnavailableError(RuntimeError):
    """The database did not answer in time or refused the connection (the breaker is open)."""


def is_outage(exc: BaseException) -> bool:
    """True for failures of the database's availability (not of a statement): connection refused or
    lost, pool or statement timeout."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    return isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError, OSError, FutureTimeout))


class DurableSqlStore(SqlStore):
    """:class:`SqlStore` with every call bounded by ``timeout_s`` and writes kept in an outbox meanwhile."""

    def __init__(
        self,
        engine: Engine,
        outbox_dir: Path,
        timeout_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        workers: int = 12,
    ) -> None:
        super().__init__(engine, clock)
        self.outbox_dir = outbox_dir
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="store")
        self._order = threading.Lock()  # "queue behind the outbox" decisions and appends
        self._down = threading.Event()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._probe: Future[bool] | None = None
        self._probed_at = 0.0
        self._outbox: Outbox | None = None
        self._adopt_left_over()
        self._thread = threading.Thread(target=self._replay_loop, name="store-outbox", daemon=True)
        self._thread.start()

    # State --------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False while the breaker is open (the database was unreachable at the last call or probe)."""
        return not self._down.is_set()

    def backlog(self) -> int:
        """Writes waiting in the outbox."""
        return len(self._outbox) if self._outbox is not None else 0

    def _adopt_left_over(self) -> None:
        """Take over the outboxes of processes that died with entries queued (they are replayed too)."""
        while (orphan := Outbox.claim(self.outbox_dir, only_with_entries=True)) is not None:
            if self._outbox is None:
                self._outbox = orphan
            else:
                self._outbox.absorb(orphan)
                orphan.close()
            log.warning("adopted an outbox left by a previous process: %d entries to replay", len(self._outbox))

    def _queue(self, kind: str, key: str | None, meta: dict[str, Any], payload: bytes | None = None) -> None:
        if self._outbox is None:
            self._outbox = Outbox.claim(self.outbox_dir)
            if self._outbox is None:
                raise StoreUnavailableError("no outbox file could be claimed")
            log.warning("database unreachable: writes go to the outbox %s", self._outbox.path.name)
        self._outbox.append(kind, key, meta, payload)
        self._wake.set()

    def _call(self, function: Callable[..., T], *args: Any, probe: bool = False) -> T:
        """``function(*args)`` in a worker thread, waited on at most ``timeout_s``; an outage opens the breaker."""
        if self._down.is_set() and not probe:
            raise StoreUnavailableError("database unreachable")
        future = self._executor.submit(function, *args)
        try:
            return future.result(self.timeout_s)
        except BaseException as exc:
            if not is_outage(exc):
                raise
            future.cancel()  # still queued behind stuck workers: never run it late
            if not self._down.is_set():
                log.warning("database unreachable (%s): degraded to the outbox", type(exc).__name__)
            self._down.set()
            self._wake.set()
            raise StoreUnavailableError(type(exc).__name__) from exc

    def _write(
        self, kind: str, key: str | None, meta: dict[str, Any], payload: bytes | None, direct: Callable[[], Any]
    ):
        """Write through to the database, or queue when it is away or the outbox still holds entries."""
        with self._order:
            if self._down.is_set() or self.backlog():
                self._queue(kind, key, meta, payload)
                return
        try:
            self._call(direct)
        except StoreUnavailableError:
            STORE_ERRORS.labels(operation=f"outbox_{kind}").inc()
            with self._order:
                self._queue(kind, key, meta, payload)

    # Results ------------------------------------------------------------------------------------
    def put_result(self, key: str, payload: bytes, ttl_s: float) -> None:
        now = self.clock()
        meta = {"created_at": now, "expires_at": now + ttl_s}
        self._write("result", key, meta, payload, lambda: SqlStore.put_result(self, key, payload, ttl_s))

    def get_result(self, key: str) -> bytes | None:
        if self.available:
            try:
                if (found := self._call(SqlStore.get_result, self, key)) is not None:
                    return found
            except StoreUnavailableError:
                pass
        return self._queued_result(key)

    def _queued_result(self, key: str) -> bytes | None:
        entry = self._outbox.find("result", key) if self._outbox is not None else None
        if entry is None or entry.meta["expires_at"] <= self.clock():
            return None
        return entry.payload

    # Viewer links -------------------------------------------------------------------------------
    def put_viewer_link(self, result_key: str, ttl_s: float, link_id: str | None = None) -> str:
        link_id = link_id or new_link_id()
        meta = {"result_key": result_key, "expires_at": self.clock() + ttl_s}
        self._write("link", link_id, meta, None, lambda: SqlStore.put_viewer_link(self, result_key, ttl_s, link_id))
        return link_id

    def get_viewer_payload(self, link_id: str) -> bytes | None:
        if self.available:
            try:
                if (found := self._call(SqlStore.get_viewer_payload, self, link_id)) is not None:
                    return found
            except StoreUnavailableError:
                pass
        link = self._outbox.find("link", link_id) if self._outbox is not None else None
        if link is None or link.meta["expires_at"] <= self.clock():
            return None
        return self.get_result(link.meta["result_key"])

    # Model contract -----------------------------------------------------------------------------
    def put_model_contract(self, model: str, label: str) -> None:
        self._call(SqlStore.put_model_contract, self, model, label)

    def model_contract(self, model: str) -> str | None:
        return self._call(SqlStore.model_contract, self, model)

    # Leases: without the database, analyse here (a lease only saves duplicate work) -------------
    def claim(self, key: str, owner: str, lease_s: float) -> bool:
        try:
            return self._call(SqlStore.claim, self, key, owner, lease_s)
        except StoreUnavailableError:
            return True

    def release(self, key: str, owner: str) -> None:
        try:
            self._call(SqlStore.release, self, key, owner)
        except StoreUnavailableError:
            pass  # the lease lapses on its own

    def lease_holder(self, key: str) -> str | None:
        try:
            return self._call(SqlStore.lease_holder, self, key)
        except StoreUnavailableError:
            return None

    # JWT replay cache: never queued (a replay must be seen now); raises at once when away --------
    def remember_jti(self, issuer: str, jti: str, expires_at: float) -> bool:
        return self._call(SqlStore.remember_jti, self, issuer, jti, expires_at)

    # Cards and feedback -------------------------------------------------------------------------
    def record_cards(self, service: str, cards: Iterable[tuple[str | None, ...]]) -> None:
        rows = [list(IssuedCard(*card)) for card in cards]
        if rows:
            meta = {"service": service, "cards": rows}
            self._write("cards", None, meta, None, lambda: SqlStore.record_cards(self, service, map(tuple, rows)))

    def add_feedback(self, rows: list[dict]) -> list[str]:
        """Feedback rows; queued ones count as new unless this outbox already holds them (the EHR retried)."""
        try:
            with self._order:
                direct = self.available and not self.backlog()
            if direct:
                return self._call(SqlStore.add_feedback, self, rows)
        except StoreUnavailableError:
            STORE_ERRORS.labels(operation="outbox_feedback").inc()
        new: list[str] = []
        with self._order:
            for row in rows:
                if self._outbox is None or not self._outbox.has("feedback", row["key"]):
                    self._queue("feedback", row["key"], row)
                    new.append(row["outcome"])
        return new

    def feedback_counts(self) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
        return self._call(SqlStore.feedback_counts, self)

    def assessments(self, result_key: str) -> list[AssessmentRow]:
        """Raises :class:`StoreUnavailableError` while the database is away (queued feedback is not read)."""
        return self._call(SqlStore.assessments, self, result_key)

    def link_assessments(self, link_id: str) -> list[AssessmentRow]:
        return self._call(SqlStore.link_assessments, self, link_id)

    def clear_results(self) -> None:
        self._call(SqlStore.clear_results, self)

    def purge_expired(self) -> int:
        return self._call(SqlStore.purge_expired, self)

    def ping(self) -> bool:
        return self._call(SqlStore.ping, self, probe=True)

    # Replay -------------------------------------------------------------------------------------
    def _apply(self, entry: Entry) -> None:
        """Write one outbox entry to the database (idempotent; expired results and links are dropped)."""
        meta, remaining = entry.meta, entry.meta.get("expires_at", float("inf")) - self.clock()
        if remaining <= 0:
            return
        if entry.kind == "result":
            SqlStore.put_result(self, entry.key or "", entry.payload or b"", remaining)
        elif entry.kind == "link":
            SqlStore.put_viewer_link(self, meta["result_key"], remaining, entry.key)
        elif entry.kind == "cards":
            SqlStore.record_cards(self, meta["service"], [tuple(card) for card in meta["cards"]])  # 2 or 5 fields
        elif entry.kind == "feedback":
            SqlStore.add_feedback(self, [meta])
        else:
            log.error("outbox entry of unknown kind %r dropped", entry.kind)

    def replay(self) -> int:
        """Replay the outbox in order while the database answers; returns the entries written."""
        written = 0
        while self._outbox is not None and not self._closed.is_set():
            batch = self._outbox.head()
            if not batch:
                break
            for entry in batch:
                try:
                    self._call(self._apply, entry)
                except StoreUnavailableError:
                    return written
                except Exception as exc:  # a row the database refuses must not block the queue behind it
                    STORE_ERRORS.labels(operation="outbox_replay").inc()
                    log.error("outbox entry (%s) refused by the database, dropped: %s", entry.kind, type(exc).__name__)
                self._outbox.delete(entry.seq)
                written += 1
        return written

    def _probe_once(self) -> None:
        """Ask the database once (at most one probe in flight, at most one per ``PROBE_EVERY_S``)."""
        if (self._probe is not None and not self._probe.done()) or time.monotonic() - self._probed_at < PROBE_EVERY_S:
            return
        self._probed_at = time.monotonic()
        self._probe = self._executor.submit(SqlStore.ping, self)
        try:
            if self._probe.result(self.timeout_s):
                self._down.clear()
                log.warning("database reachable again: replaying %d outbox entries", self.backlog())
        except BaseException as exc:  # still away
            log.debug("database still unreachable: %s", type(exc).__name__)

    def _replay_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(PROBE_EVERY_S)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                if self._down.is_set():
                    self._probe_once()
                if not self._down.is_set() and self.backlog():
                    if (written := self.replay()) and not self.backlog():
                        log.warning("outbox replayed: %d entries now in the database", written)
            except Exception as exc:  # the loop must outlive any one failure
                log.error("outbox replay failed: %s", type(exc).__name__)
                self._closed.wait(PROBE_EVERY_S)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(5)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._outbox is not None:
            self._outbox.close()
        super().close()
