"""Prometheus metrics (prometheus-client): what an SRE alerts on. No label ever carries patient data.

Labels are drawn from small fixed sets (hook names, outcomes, stage names, card indicators, model
names, gRPC status codes), so the series count stays bounded whatever the traffic. ``GET /metrics``
serves :data:`REGISTRY` (on ``HIPCAD_METRICS_PORT`` when set, else on the service port) and never
waits for the database: figures read from it come through :class:`CachedCollector`.
docs/operations.md explains each metric and the alerts built on it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, start_wsgi_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cds_service import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
# process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds… and python_info, as the
# default registry would have them (Prometheus client guidelines: "Process metrics").
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HOOK_LATENCY = Histogram(
    "hipcad_hook_duration_seconds",
    "Time to answer one CDS hook request, by hook and outcome (analysed: an analysis ran for it; cached: a "
    "stored result answered).",
    ("hook", "outcome"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_LATENCY = Histogram(
    "hipcad_stage_duration_seconds",
    "Time spent in one pipeline stage (find_study, fetch, decode, split_hips, infer, explain, ...).",
    ("stage",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TRITON_LATENCY = Histogram(
    "hipcad_triton_request_duration_seconds",
    "Latency of one Triton gRPC call, by model.",
    ("model",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TRITON_ERRORS = Counter(
    "hipcad_triton_errors_total",
    "Failed Triton calls, by model and gRPC status code (after retries).",
    ("model", "code"),
    registry=REGISTRY,
)
TRITON_RETRIES = Counter(
    "hipcad_triton_retries_total", "Triton calls retried after UNAVAILABLE.", ("model",), registry=REGISTRY
)
CACHE = Counter(
    "hipcad_result_cache_total",
    "Result lookups in the shared store: hit (analysed before, on any replica) or miss.",
    ("result",),
    registry=REGISTRY,
)
ANALYSES = Counter(
    "hipcad_analyses_total",
    "Analyses (fetch → explain) run by this replica under its lease, by event: started, finished, failed "
    "(lease waits and cache hits are not analyses: hipcad_lease_waits_total, hipcad_result_cache_total).",
    ("event",),
    registry=REGISTRY,
)
ANALYSES_IN_FLIGHT = Gauge("hipcad_analyses_in_flight", "Analyses running on this replica now.", registry=REGISTRY)
LEASE_WAITS = Counter(
    "hipcad_lease_waits_total",
    "Hooks that waited for another replica's analysis of the same image instead of running their own.",
    registry=REGISTRY,
)
CARDS = Counter("hipcad_cards_total", "Cards returned, by indicator.", ("indicator",), registry=REGISTRY)
FEEDBACK = Counter(
    "hipcad_feedback_total",
    "New feedback entries stored, by outcome (accepted / overridden).",
    ("outcome",),
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "hipcad_store_errors_total", "Failed calls to the shared store, by operation.", ("operation",), registry=REGISTRY
)
DEPENDENCY_UP = Gauge(
    "hipcad_dependency_up",
    "1 when the last background check of a shared dependency (store, triton) passed, else 0.",
    ("dependency",),
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Gauge(
    "hipcad_event_loop_lag_seconds",
    "How late the event loop last woke a 250 ms sleeper (readiness fails while it stays high).",
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "hipcad_auth_failures_total",
    "Requests refused 401, by reason (cds_service.cdshooks.jwt.FAILURE_REASONS: key, jwks, expired, "
    "audience, replay, replay_store...).",
    ("reason",),
    registry=REGISTRY,
)
BUILD_INFO = Info("hipcad_build", "The service's build: its version.", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})
SERVED_MODELS = Info(
    "hipcad_served_model",
    "The model versions Triton serves, as last checked against the service's contract.",
    ("model",),
    registry=REGISTRY,
)


def set_served_models(versions: dict[str, str]) -> None:
    """Publish the served model versions (``{name: version}``) as ``hipcad_served_model_info``."""
    for model, version in versions.items():
        SERVED_MODELS.labels(model=model).info({"version": version})


@contextmanager
def timed(histogram: Histogram, **labels: str) -> Iterator[None]:
    """Observe the block's wall time into ``histogram`` (with ``labels``), also when it raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.labels(**labels).observe(time.perf_counter() - started)


class CachedCollector(Collector):
    """A collector that reads a slow source (the database) without ever making a scrape wait for it.

    Each scrape asks for a refresh in a background thread of its own and waits at most ``wait_s`` for
    it; then it serves the last figures the source gave. A refresh still running (a hung database) is
    not started again, so at most one thread waits on the source. A source that yields nothing (its
    store failed) leaves the last figures in place. ``hipcad_metrics_cache_age_seconds{source}`` says
    how old the figures served are (Prometheus "Writing exporters": never block a scrape on a backend).
    """

    def __init__(self, name: str, source: Collector, wait_s: float = 0.2) -> None:
        self.name = name
        self.source = source
        self.wait_s = wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"metrics-{name}")
        self._lock = threading.Lock()
        self._pending: Future[None] | None = None
        self._families: list[Metric] = []
        self._refreshed_at: float | None = None

    def refresh(self) -> Future[None]:
        """Start a refresh unless one is running; the running (or new) one."""
        with self._lock:
            if self._pending is None or self._pending.done():
                self._pending = self._executor.submit(self._read)
            return self._pending

    def _read(self) -> None:
        families = list(self.source.collect())
        if families:
            self._families, self._refreshed_at = families, time.monotonic()

    def describe(self) -> list[Metric]:
        return []  # the source's names are known only once it has answered

    def collect(self) -> Iterator[Metric]:
        wait([self.refresh()], timeout=self.wait_s)
        yield from self._families
        age = GaugeMetricFamily(
            "hipcad_metrics_cache_age_seconds",
            "Age of the database-derived figures served (NaN: none read yet).",
            labels=["source"],
        )
        refreshed = self._refreshed_at
        age.add_metric([self.name], float("nan") if refreshed is None else time.monotonic() - refreshed)
        yield age


_cached: dict[str, CachedCollector] = {}


def serve_cached(name: str, source: Collector) -> CachedCollector:
    """Register ``source`` behind a :class:`CachedCollector` (once per name; later calls swap the source)."""
    collector = _cached.get(name)
    if collector is None:
        collector = _cached[name] = CachedCollector(name, source)
        REGISTRY.register(collector)
    collector.source = source
    return collector


# Scrapes render in threads of their own: the default executor may be full of hooks' database calls.
_EXPOSITION = ThreadPoolExecutor(max_workers=2, thread_name_prefix="metrics-exposition")


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def exposition_async() -> tuple[bytes, str]:
    """:func:`exposition` off the event loop, never queued behind the default executor's work."""
    return await asyncio.get_running_loop().run_in_executor(_EXPOSITION, exposition)


def start_metrics_server(host: str, port: int) -> Callable[[], None]:
    """``GET /metrics`` on a port of its own (kept off the public port); the function that stops it."""
    server, thread = start_wsgi_server(port, addr=host, registry=REGISTRY)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
