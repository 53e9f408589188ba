"""Server-side SMART sessions: the browser holds only an opaque id in a cookie, never a token.

A launch creates a session (the id goes to the browser as an ``HttpOnly``, ``SameSite=Lax`` cookie,
``Secure`` when the service is reached over HTTPS) and a pending authorization keyed by ``state``
(RFC 6749 § 10.12: the callback must come back to the browser that started it, once). The callback
takes the pending authorization out (a second use of the same ``state``, or of the same code, finds
nothing), and the session then keeps the access token and the result it opened.

Held in this process's memory, bounded in number and time: several replicas need the launch and its
callback to reach the same replica (session affinity on the ``hipcad_smart`` cookie).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from cds_service.smart.discovery import SmartConfiguration

COOKIE = "hipcad_smart"
#: How long the user may take between the launch and the callback (login, patient picker), seconds.
PENDING_TTL_S = 600.0


@dataclass
class PendingLaunch:
    """An authorization in flight: what the callback needs to finish it."""

    session_id: str
    config: SmartConfiguration
    code_verifier: str
    created: float = field(default_factory=time.time)


@dataclass
class SmartSession:
    """One browser's SMART session."""

    id: str
    expires: float
    iss: str | None = None
    access_token: str | None = None
    patient: str | None = None
    result_id: str | None = None  # the viewer link row (store) of the result shown


class SessionStore:
    """Sessions by id and pending launches by ``state``, in memory, with expiry and a size bound."""

    def __init__(self, ttl_s: float = 3600.0, max_sessions: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, SmartSession] = OrderedDict()
        self._pending: OrderedDict[str, PendingLaunch] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[sid]
        for state in [st for st, p in self._pending.items() if p.created + PENDING_TTL_S <= now]:
            del self._pending[state]
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        while len(self._pending) > self.max_sessions:
            self._pending.popitem(last=False)

    def session(self, session_id: str | None) -> SmartSession | None:
        """The live session ``session_id`` names, or None."""
        if not session_id:
            return None
        with self._lock:
            self._expire(time.time())
            return self._sessions.get(session_id)

    def start(self, session_id: str | None) -> SmartSession:
        """The browser's session if it has a live one, else a new one (a fresh random id)."""
        with self._lock:
            now = time.time()
            self._expire(now)
            found = self._sessions.get(session_id or "")
            if found is not None:
                return found
            created = SmartSession(secrets.token_urlsafe(32), now + self.ttl_s)
            self._sessions[created.id] = created
            return created

    def add_pending(self, state: str, pending: PendingLaunch) -> None:
        with self._lock:
            self._expire(time.time())
            self._pending[state] = pending

    def take_pending(self, state: str, session_id: str | None) -> PendingLaunch | None:
        """The pending launch of ``state`` if it was started by ``session_id``; removed either way (one use)."""
        with self._lock:
            self._expire(time.time())
            pending = self._pending.pop(state, None)
        if pending is None or not session_id or not hmac.compare_digest(pending.session_id, session_id):
            return None
        return pending
