"""The outbox: a durable local queue of the store writes the shared database could not take.

    write ──► database unreachable (or entries still queued) ──► outbox (SQLite, this replica)
                                                                   │ replayed in order, idempotently
                                                                   ▼
                                                               database

One SQLite file per process under the outbox folder (``HIPCAD_OUTBOX_DIR``), claimed with an
exclusive ``flock`` on a sidecar lock file, so two processes on one host never share a queue. The
files are named ``outbox-<n>.sqlite3``; a process that starts adopts the entries of any file no live
process holds (a replica that crashed mid-outage), so a crash loses nothing either. Entries are
written with ``synchronous=FULL`` (durable once :meth:`Outbox.append` returns) and hold the same data
the database would (result payloads, card ids, feedback bodies), so the file is created ``0600``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from cds_service.metrics import REGISTRY

#: Entries waiting in this process's outbox (alert when it stays above 0: the database is unreachable).
OUTBOX_BACKLOG = Gauge(
    "hipcad_store_outbox_entries", "Store writes queued locally while the database is unreachable.", registry=REGISTRY
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entry (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT,
    meta TEXT NOT NULL,
    payload BLOB
);
CREATE INDEX IF NOT EXISTS ix_entry_kind_key ON entry (kind, key);
"""


@dataclass(frozen=True)
class Entry:
    """One queued write: ``kind`` (result, link, cards, feedback), its lookup key, JSON ``meta``, bytes."""

    seq: int
    kind: str
    key: str | None
    meta: dict[str, Any]
    payload: bytes | None


class Outbox:
    """One locked outbox file; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._count = int(self._db.execute("SELECT count(*) FROM entry").fetchone()[0])

    @classmethod
    def claim(cls, folder: Path, *, only_with_entries: bool = False) -> Outbox | None:
        """The first outbox file in ``folder`` no live process holds (created when none is free);
        ``only_with_entries``: only an existing, non-empty one (adoption at start-up), else None."""
        if only_with_entries and not folder.is_dir():
            return None
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(10_000):
            path = folder / f"outbox-{n}.sqlite3"
            if only_with_entries and not path.exists():
                continue
            fd = os.open(folder / f"outbox-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if not path.exists():
                if only_with_entries:
                    os.close(fd)
                    continue
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            outbox = cls(path, fd)
            if only_with_entries and not len(outbox):
                outbox.close()
                continue
            return outbox
        return None

    def __len__(self) -> int:
        return self._count

    def append(self, kind: str, key: str | None, meta: dict[str, Any], payload: bytes | None = None) -> int:
        """Queue one write durably; returns its sequence number."""
        with self._mutex:
            cursor = self._db.execute(
                "INSERT INTO entry (kind, key, meta, payload) VALUES (?, ?, ?, ?)",
                (kind, key, json.dumps(meta, separators=(",", ":")), payload),
            )
            self._count += 1
            OUTBOX_BACKLOG.inc()
            return int(cursor.lastrowid or 0)

    def head(self, limit: int = 64) -> list[Entry]:
        """The oldest ``limit`` entries, in the order they were written."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT seq, kind, key, meta, payload FROM entry ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Entry(seq, kind, key, json.loads(meta), payload) for seq, kind, key, meta, payload in rows]

    def delete(self, seq: int) -> None:
        """Forget an entry once the database holds it."""
        with self._mutex:
            if self._db.execute("DELETE FROM entry WHERE seq = ?", (seq,)).rowcount:
                self._count -= 1
                OUTBOX_BACKLOG.dec()

    def find(self, kind: str, key: str) -> Entry | None:
        """The latest queued entry of ``kind`` under ``key`` (reads while the database lacks it)."""
        if not self._count:
            return None
        with self._mutex:
            row = self._db.execute(
                "SELECT seq, kind, key, meta, payload FROM entry WHERE kind = ? AND key = ? ORDER BY seq DESC LIMIT 1",
                (kind, key),
            ).fetchone()
        return None if row is None else Entry(row[0], row[1], row[2], json.loads(row[3]), row[4])

    def has(self, kind: str, key: str) -> bool:
        return self.find(kind, key) is not None

    def absorb(self, other: Outbox) -> None:
        """Move ``other``'s entries (an outbox left by a dead process) to the end of this one, in order."""
        for entry in other.head(limit=1_000_000):
            self.append(entry.kind, entry.key, entry.meta, entry.payload)
            other.delete(entry.seq)

    def close(self) -> None:
        """Close the file and give up the lock (the entries stay for the next process)."""
        with self._mutex:
            OUTBOX_BACKLOG.dec(self._count)
            self._count = 0
            self._db.close()
        os.close(self._lock_fd)
