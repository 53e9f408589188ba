"""Kubernetes probes of one replica, and the state of the dependencies it shares with the others.

Probe semantics follow Kubernetes ("Configure Liveness, Readiness and Startup Probes"):

* **liveness** (``GET /healthz``): the process answers. Restarting a pod cures none of a shared
  dependency's outages, so nothing else is asked; the body reports the dependencies' last known state.
* **startup** (``GET /startupz``): the application has started (store migrated, pipeline built);
  Kubernetes holds the other probes back until it passes, so a slow start is not a liveness failure.
* **readiness** (``GET /readyz``): *this replica* can take traffic — started, not shutting down, its
  event loop not overloaded. A shared dependency (PostgreSQL, Triton) being down is **not** a reason:
  every replica would fail together and the Service would have no endpoints left, so the EHR would get
  the ingress' 503 instead of the degraded cards the processes still give ("analysis unavailable",
  feedback answered 503 for a retry). The dependencies are reported in the body, as ``degraded``.

No probe does I/O: :class:`DependencyMonitor` checks the dependencies in the background, each check
bounded by a timeout and never more than one in flight (a hung PostgreSQL holds one thread, not one per
probe), and publishes ``hipcad_dependency_up`` and ``hipcad_event_loop_lag_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cds_service.metrics import DEPENDENCY_UP, EVENT_LOOP_LAG

#: An asynchronous check: True when the dependency answers as it should; may raise (counts as down).
Check = Callable[[], Awaitable[bool]]

#: How often the event loop's lag is sampled, and how many samples the overload decision looks at.
LAG_SAMPLE_S = 0.25
LAG_WINDOW = 8


@dataclass
class DependencyState:
    """The last known state of one dependency (``up`` is None before its first check ends)."""

    up: bool | None = None
    checked_at: float | None = None  # time.time() of the last finished (or timed-out) check
    since: float = field(default_factory=time.time)  # when ``up`` last changed

    def as_json(self) -> dict[str, Any]:
        status = "unknown" if self.up is None else "up" if self.up else "down"
        return {"status": status, "checked_at": self.checked_at, "since": self.since}


class DependencyMonitor:
    """Checks each dependency every ``interval_s`` in the background, each within ``timeout_s``.

    A check still running when the next round comes is not started again: the round waits for it
    (up to ``timeout_s``) and reports the dependency down while it hangs.
    """

    def __init__(self, checks: dict[str, Check], interval_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self.checks = checks
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.states = {name: DependencyState() for name in checks}
        self._running: dict[str, asyncio.Task[bool]] = {}

    @staticmethod
    def in_thread(function: Callable[[], bool], name: str) -> Check:
        """A blocking check run in a thread of its own (never the default executor, which a hung
        database can fill with the hooks' own queries)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"check-{name}")

        async def check() -> bool:
            return bool(await asyncio.get_running_loop().run_in_executor(executor, function))

        return check

    async def check_once(self) -> None:
        """One round: every dependency checked (or found still hanging) within ``timeout_s``."""
        await asyncio.gather(*(self._check(name) for name in self.checks))

    async def _check(self, name: str) -> None:
        task = self._running.get(name)
        if task is None or task.done():
            task = self._running[name] = asyncio.ensure_future(self.checks[name]())
        done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        up = bool(task in done and not task.cancelled() and task.exception() is None and task.result())
        self._record(name, up)

    def _record(self, name: str, up: bool) -> None:
        state = self.states[name]
        now = time.time()
        if state.up is not up:
            state.since = now
        state.up, state.checked_at = up, now
        DEPENDENCY_UP.labels(dependency=name).set(1 if up else 0)

    async def run(self) -> None:
        """Check forever (cancel the task to stop)."""
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval_s)

    def as_json(self) -> dict[str, Any]:
        return {name: state.as_json() for name, state in self.states.items()}

    def down(self) -> list[str]:
        """The dependencies last found down (answers are degraded while any is)."""
        return sorted(name for name, state in self.states.items() if state.up is False)


class Probes:
    """The replica's own state behind the probe routes: started, stopping, overloaded."""

    def __init__(self, monitor: DependencyMonitor | None = None, max_loop_lag_s: float = 2.0) -> None:
        self.monitor = monitor or DependencyMonitor({})
        self.max_loop_lag_s = max_loop_lag_s
        self.started = False
        self.stopping = False
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, monitor: DependencyMonitor) -> None:
        """Start the background checks (at the end of the application's start-up)."""
        self.monitor = monitor
        self._tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(self._sample_lag())]
        self.started = True

    async def stop(self) -> None:
        """Shutting down: readiness fails from here on; the background tasks end."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sample_lag(self) -> None:
        """How late the event loop wakes a sleeper: what every request waits before it is served."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_SAMPLE_S)
            lag = max(0.0, loop.time() - before - LAG_SAMPLE_S)
            self._lags.append(lag)
            EVENT_LOOP_LAG.set(lag)

    @property
    def loop_lag_s(self) -> float:
        """The worst lag of the last ``LAG_WINDOW`` samples."""
        return max(self._lags, default=0.0)

    def liveness(self) -> tuple[int, dict[str, Any]]:
        """Always 200 while the process answers; the dependencies as last seen, for people."""
        return 200, {"status": "ok", "dependencies": self.monitor.as_json()}

    def startup(self) -> tuple[int, dict[str, Any]]:
        return (200, {"status": "started"}) if self.started else (503, {"status": "starting"})

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """200 when this replica can serve, whatever its shared dependencies do (they degrade answers)."""
        reason = (
            "starting"
            if not self.started
            else "shutting down"
            if self.stopping
            else "overloaded"
            if self.loop_lag_s > self.max_loop_lag_s
            else None
        )
        body: dict[str, Any] = {
            "status": "not-ready" if reason else "ready",
            "degraded": self.monitor.down(),
            "dependencies": self.monitor.as_json(),
            "event_loop_lag_s": round(self.loop_lag_s, 3),
        }
        if reason:
            body["reason"] = reason
        return (503 if reason else 200), body
