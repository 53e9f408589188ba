"""Fixtures for the viewer: a real-looking Analysis (phantom radiograph + heat map), its store and app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cds_service.dicom.decode import decode_dataset
from cds_service.dicom.preprocess import display_image
from cds_service.explain.heatmap import HipHeatmap, heat_canvas, render_chart_image
from cds_service.pipeline import Analysis
from cds_service.settings import Settings
from cds_service.viewer import ResultStore, build_router
from tests.findings_factory import findings

SECRET = "viewer-test-secret"


def blob(size: int = 28, centre: tuple[float, float] = (0.55, 0.35), sigma: float = 0.12) -> np.ndarray:
    """A Gaussian blob as a CAM in crop orientation (rows, cols in [0, 1])."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def make_analysis(display: np.ndarray, **findings_kw: object) -> Analysis:
    """An Analysis as the pipeline builds it (heat canvas from per-hip maps; stored size = display size)."""
    rows, cols = display.shape
    middle = cols // 2
    heatmaps = [
        HipHeatmap("R", blob(), mirrored=False, box=(0, 0, middle, rows)),  # image left = patient's right
        HipHeatmap("L", blob() * 0.0, mirrored=True, box=(middle, 0, cols, rows)),
    ]
    heat = heat_canvas(heatmaps, (rows, cols), display.shape)
    chart = render_chart_image(display, heat, heatmaps, (rows, cols))
    return Analysis(findings(**findings_kw), chart, (rows, cols), heatmaps, display, heat.astype(np.float16))


@pytest.fixture(scope="session")
def phantom_display(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The demo's sample radiograph (right Garden III phantom), decoded and at display size."""
    phantoms = pytest.importorskip("cds_service.training.phantoms")
    folder: Path = tmp_path_factory.mktemp("viewer-dicom")
    path = phantoms.write_sample_study(folder, seed=7)
    return display_image(decode_dataset(pydicom.dcmread(path)))


@pytest.fixture(scope="session")
def analysis(phantom_display: np.ndarray) -> Analysis:
    return make_analysis(phantom_display)


@pytest.fixture
def viewer_settings() -> Settings:
    return Settings(host="127.0.0.1", port=8080, viewer_secret=SECRET, viewer_link_ttl_s=900, result_ttl_s=3600)


@pytest.fixture
def store(viewer_settings: Settings) -> ResultStore:
    return ResultStore(viewer_settings.result_ttl_s)


@pytest.fixture
def viewer_client(viewer_settings: Settings, store: ResultStore) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(build_router(viewer_settings, store))
    with TestClient(app, base_url=viewer_settings.base_url()) as client:
        yield client
