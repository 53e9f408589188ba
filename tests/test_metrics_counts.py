"""What the analysis metrics count (issue 30: "correct analysis counts, cache hits apart").

``hipcad_analyses_total{event="started"}`` counts an analysis only when a replica holds the study's
lease and runs it; a hook that waits for another replica's lease (``hipcad_lease_waits_total``) or is
answered by a stored result (``hipcad_result_cache_total{result="hit"}``, hook outcome ``cached``)
starts none. Real parts: the local Triton, a folder store with a fresh phantom study, and two
pipelines ("replicas", each with its own lease owner) sharing one migrated SQLite store, as two pods
share PostgreSQL. The registry is process-wide, so every figure is a sum over both replicas.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pydicom
import pytest

from cds_service.cdshooks.requests import parse_hook_request
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import TritonServer
from cds_service.metrics import REGISTRY
from cds_service.pipeline import AnalysisPipeline, HookOutcome
from cds_service.settings import Settings
from cds_service.training.phantoms import write_sample_study

pytestmark = [pytest.mark.triton, pytest.mark.slow]

HOOK = "order-select"
_T = TypeVar("_T")

#: (metric sample name, labels) → short name, for the deltas the tests assert.
FIGURES = {
    "started": ("hipcad_analyses_total", {"event": "started"}),
    "finished": ("hipcad_analyses_total", {"event": "finished"}),
    "failed": ("hipcad_analyses_total", {"event": "failed"}),
    "hits": ("hipcad_result_cache_total", {"result": "hit"}),
    "misses": ("hipcad_result_cache_total", {"result": "miss"}),
    "lease_waits": ("hipcad_lease_waits_total", {}),
    "hooks_analysed": ("hipcad_hook_duration_seconds_count", {"hook": HOOK, "outcome": "analysed"}),
    "hooks_cached": ("hipcad_hook_duration_seconds_count", {"hook": HOOK, "outcome": "cached"}),
}


def figures() -> dict[str, float]:
    return {name: REGISTRY.get_sample_value(sample, labels) or 0.0 for name, (sample, labels) in FIGURES.items()}


def delta(before: dict[str, float]) -> dict[str, float]:
    after = figures()
    return {name: after[name] - before[name] for name in FIGURES}


@pytest.fixture
def study_folder(tmp_path: Path) -> Path:
    """A folder store with one phantom study no test has analysed (the result store is new too)."""
    folder = tmp_path / "dicom"
    write_sample_study(folder, seed=3030)
    return folder


def settings_for(folder: Path, triton: TritonServer, database: Path) -> Settings:
    return Settings(
        dicom_folder=folder,
        feedback_db=database,
        output_folder=database.parent / "out",
        triton_url=triton.grpc_url,
        hook_deadline_s=120.0,  # the answer waits for the analysis on a busy 2-core machine
    )


@pytest.fixture
def shared(study_folder: Path, triton: TritonServer, tmp_path: Path) -> Settings:
    """The settings both replicas run with: one store file, one Triton, one folder store."""
    return settings_for(study_folder, triton, tmp_path / "shared.sqlite3")


def run(settings: Settings, scenario: Callable[..., Awaitable[_T]], replicas: int = 2) -> _T:
    """Run ``scenario(*pipelines)`` on ``replicas`` pipelines made and closed in one event loop."""

    async def main() -> _T:
        pipelines = [AnalysisPipeline.from_settings(settings) for _ in range(replicas)]
        assert len({pipeline.store.owner for pipeline in pipelines}) == replicas  # distinct lease owners
        try:
            return await scenario(*pipelines)
        finally:
            for pipeline in pipelines:
                await pipeline.close()

    return asyncio.run(main())


def request_for(folder: Path) -> bytes:
    """A fresh order-select request (own hookInstance) about the folder's study."""
    ds = pydicom.dcmread(next(folder.rglob("*.dcm")), stop_before_pixels=True)
    template = load_example(f"{HOOK}.json")
    bundle = imaging_study_bundle(ds, template["context"]["patientId"], folder.as_uri())
    return json.dumps(with_studies(template, bundle)).encode()


async def hook(pipeline: AnalysisPipeline, folder: Path) -> HookOutcome:
    request = parse_hook_request(request_for(folder), HOOK, max_depth=64, max_number_digits=64)
    return await pipeline.handle(request, caller="hipcad-demo-ehr")


def has_finding(outcome: HookOutcome) -> bool:
    return outcome.analysis is not None and bool(outcome.response.cards)


def test_one_new_study_asked_twice_is_one_analysis_and_one_cache_hit(shared, study_folder):
    before = figures()

    async def two_hooks(replica: AnalysisPipeline) -> list[HookOutcome]:
        return [await hook(replica, study_folder), await hook(replica, study_folder)]

    answers = run(shared, two_hooks, replicas=1)
    assert all(has_finding(answer) for answer in answers)
    assert delta(before) == {
        "started": 1,
        "finished": 1,
        "failed": 0,
        "hits": 1,
        "misses": 1,
        "lease_waits": 0,
        "hooks_analysed": 1,
        "hooks_cached": 1,
    }


def test_a_lease_wait_on_another_replica_is_not_an_analysis(shared, study_folder):
    """A analyses; B, asked while A holds the lease, waits for A's result; B asked again: a cache hit."""
    before = figures()

    async def scenario(a: AnalysisPipeline, b: AnalysisPipeline) -> list[HookOutcome]:
        first = asyncio.create_task(hook(a, study_folder))
        while figures()["started"] == before["started"]:  # until A holds the lease and is analysing
            assert not first.done(), first
            await asyncio.sleep(0.01)
        waiting = await hook(b, study_folder)
        return [await first, waiting, await hook(b, study_folder)]

    answers = run(shared, scenario)
    assert all(has_finding(answer) for answer in answers)
    assert answers[1].analysis.findings == answers[0].analysis.findings  # A's result, not a second run
    assert delta(before) == {
        "started": 1,  # before the fix: 2 (B's wait counted as an analysis)
        "finished": 1,
        "failed": 0,
        "hits": 1,
        "misses": 2,
        "lease_waits": 1,
        "hooks_analysed": 2,  # A's hook and B's waiting hook: an analysis ran for both
        "hooks_cached": 1,
    }
