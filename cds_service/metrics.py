"""Prometheus metrics (prometheus-client): what an SRE alerts on. No label ever carries patient data.

Labels are drawn from small fixed sets (hook names, outcomes, stage names, card indicators, model
names, gRPC status codes), so the series count stays bounded whatever the traffic. ``GET /metrics``
serves :data:`REGISTRY`; docs/operations.md explains each metric and the alerts built on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HOOK_LATENCY = Histogram(
    "hipcad_hook_duration_seconds",
    "Time to answer one CDS hook request, by hook and outcome.",
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
    "Analyses (fetch → explain) run by this replica, by event: started, finished, failed.",
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


@contextmanager
def timed(histogram: Histogram, **labels: str) -> Iterator[None]:
    """Observe the block's wall time into ``histogram`` (with ``labels``), also when it raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.labels(**labels).observe(time.perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
