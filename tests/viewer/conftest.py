"""Fixtures for the viewer: a real-looking Analysis (phantom radiograph + heat map), its store and app."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cds_service.dicom.decode import DecodedImage, decode_dataset
from cds_service.dicom.preprocess import display_image
from cds_service.domain import Analysis, ResultKey, StudyIdentity
from cds_service.explain.heatmap import HipHeatmap, encode_radiograph, heat_canvas, heat_levels, render_chart_image
from cds_service.settings import Settings
from cds_service.store import AsyncStore, open_store
from cds_service.store.codec import encode
from cds_service.viewer import build_router, issue_token, viewer_link
from tests.findings_factory import findings

SECRET = "viewer-test-secret"


def blob(size: int = 28, centre: tuple[float, float] = (0.55, 0.35), sigma: float = 0.12) -> np.ndarray:
    """A Gaussian blob as a CAM in crop orientation (rows, cols in [0, 1])."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


#: The study identity the fixtures carry (the sample phantom's own header values).
STUDY = StudyIdentity("20261205", "101500", "XR PELVIS AP (synthetic phantom)", "ACC700000")


def make_analysis(grey: np.ndarray, **findings_kw: object) -> Analysis:
    """An Analysis as the pipeline builds it from the source-resolution ``grey`` radiograph: heat
    canvas from per-hip maps at display size, the source-resolution JPEG and the study identity."""
    rows, cols = grey.shape
    display = display_image(DecodedImage(grey, "L", None, "1.2.3"))
    middle = cols // 2
    heatmaps = [
        HipHeatmap("R", blob(), mirrored=False, box=(0, 0, middle, rows)),  # image left = patient's right
        HipHeatmap("L", blob() * 0.0, mirrored=True, box=(middle, 0, cols, rows)),
    ]
    heat = heat_canvas(heatmaps, (rows, cols), display.shape)
    chart = render_chart_image(display, heat, heatmaps, (rows, cols))
    return Analysis(
        findings(**findings_kw),
        chart,
        (rows, cols),
        heatmaps,
        display,
        heat_levels(heat),
        radiograph=encode_radiograph(grey),
        study=STUDY,
    )


def with_site(analysis: Analysis, site: str) -> Analysis:
    """``analysis`` with every hip's fracture site set to ``site`` (a site-aware model's output)."""
    hips = [dataclasses.replace(hip, site=site) for hip in analysis.findings.hips]
    return dataclasses.replace(analysis, findings=dataclasses.replace(analysis.findings, hips=hips))


@functools.cache
def sample_radiograph() -> np.ndarray:
    """The demo's sample radiograph (right Garden III phantom), decoded at source resolution (1380 × 2039)."""
    phantoms = pytest.importorskip("cds_service.training.phantoms")
    with tempfile.TemporaryDirectory() as folder:
        path = phantoms.write_sample_study(Path(folder), seed=7)
        return decode_dataset(pydicom.dcmread(path)).grey


@pytest.fixture(scope="session")
def phantom_grey() -> np.ndarray:
    return sample_radiograph()


@pytest.fixture(scope="session")
def phantom_display() -> np.ndarray:
    """The sample radiograph at display size (what ``Analysis.display`` holds)."""
    return display_image(DecodedImage(sample_radiograph(), "L", None, "1.2.3"))


@pytest.fixture(scope="session")
def analysis() -> Analysis:
    return make_analysis(sample_radiograph())


@pytest.fixture
def viewer_settings() -> Settings:
    return Settings(host="127.0.0.1", port=8080, viewer_secret=SECRET, viewer_link_ttl_s=900, result_ttl_s=3600)


def make_store(folder: Path, **settings: object) -> AsyncStore:
    """The embedded store (SQLite, migrated) in ``folder``."""
    return open_store(Settings(feedback_db=folder / "store.sqlite3", **settings))


def stored_key(store: AsyncStore, analysis: Analysis, ttl_s: float = 3600) -> ResultKey:
    """Put ``analysis`` in the store under a fresh key, as the scheduler does after an analysis."""
    key = ResultKey("file:///test", "1.2.3", str(uuid.uuid4()), "pat-1", "", "fracture@1,garden@1")
    store.sql.put_result(key.digest(), encode(analysis), ttl_s)
    return key


def _run(coroutine: Any) -> Any:
    """Run a coroutine from sync test code, also where an event loop already runs (playwright's)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def link(settings: Settings, store: AsyncStore, analysis: Analysis) -> str:
    """A card's viewer URL for ``analysis`` (stored first)."""
    return _run(viewer_link(settings, store, stored_key(store, analysis)))


def token(settings: Settings, store: AsyncStore, analysis: Analysis, now: float | None = None) -> str:
    return _run(issue_token(settings, store, stored_key(store, analysis), now=now))


@pytest.fixture
def store(tmp_path: Path) -> AsyncStore:
    return make_store(tmp_path)


@pytest.fixture
def viewer_client(viewer_settings: Settings, store: AsyncStore) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(build_router(viewer_settings, store))
    with TestClient(app, base_url=viewer_settings.base_url()) as client:
        yield client
