"""Analysed results kept in memory for the viewer, under unguessable ids, for a limited time."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cds_service.pipeline import Analysis


@dataclass
class _Entry:
    analysis: Analysis
    stored_at: float


class ResultStore:
    """Thread-safe in-memory store: ``put`` an analysis, ``get`` it back by id until ``ttl_s`` passes.

    Beyond ``max_entries`` the least recently stored result is evicted. Putting the same analysis
    object again (the pipeline's cache answers repeated hooks with one object) returns its existing
    id and restarts its lifetime, so repeated hooks do not fill the store.
    """

    def __init__(self, ttl_s: int, max_entries: int = 128, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            raise ValueError("ttl_s and max_entries must be positive")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._ids: dict[int, str] = {}  # id(analysis) → result id; the entry keeps the object alive

    def put(self, analysis: Analysis) -> str:
        """Store ``analysis``; returns its result id (random, 128 bits, URL-safe)."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            result_id = self._ids.get(id(analysis))
            if result_id is not None and self._entries[result_id].analysis is analysis:
                self._entries[result_id].stored_at = now
                self._entries.move_to_end(result_id)
                return result_id
            result_id = secrets.token_urlsafe(16)
            self._entries[result_id] = _Entry(analysis, now)
            self._ids[id(analysis)] = result_id
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))
            return result_id

    def get(self, result_id: str) -> Analysis | None:
        """The analysis stored under ``result_id``, or None when unknown or older than the TTL."""
        with self._lock:
            entry = self._entries.get(result_id)
            if entry is None:
                return None
            if self._clock() - entry.stored_at >= self.ttl_s:
                self._drop(result_id)
                return None
            return entry.analysis

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._entries)

    def _purge(self, now: float) -> None:
        # Entries are ordered by store time (put moves refreshed ones to the end).
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            if now - oldest.stored_at < self.ttl_s:
                break
            self._drop(oldest_id)

    def _drop(self, result_id: str) -> None:
        entry = self._entries.pop(result_id)
        if self._ids.get(id(entry.analysis)) == result_id:
            del self._ids[id(entry.analysis)]
