"""The analyser's image-stage pool: sized to the cores the process may use, and run in the caller's context."""

import asyncio
import contextvars
import os

import pytest

from cds_service.analyser import on_image_thread, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", AFFINITY),  # no limit: the affinity mask
        ("200000 100000\n", min(AFFINITY, 2)),  # limits.cpu: 2
        ("150000 100000\n", min(AFFINITY, 2)),  # 1.5 CPUs: rounded up
        ("50000 100000\n", 1),  # half a CPU: still one thread
        ("garbage\n", AFFINITY),
    ],
)
def test_usable_cores_honour_a_cgroup_cpu_quota(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert usable_cores(path) == expected


def test_usable_cores_without_cgroup_v2_is_the_affinity_mask(tmp_path):
    assert usable_cores(tmp_path / "missing") == AFFINITY


def test_image_stages_see_the_callers_context():
    """The trace span of the analysis is a context variable: the stage running on the pool must see it."""
    current = contextvars.ContextVar("current", default="unset")

    async def stage() -> str:
        current.set("analysis span")
        return await on_image_thread(current.get)

    assert asyncio.run(stage()) == "analysis span"
