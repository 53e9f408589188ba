"""``out/heatmap.png`` as the demo writes it: fetched from a real viewer server, laterality labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cds_service.demo import free_port, write_outputs
from cds_service.explain.heatmap import decode_radiograph, label_box, label_hips, overlay, upsample_levels
from cds_service.settings import Settings
from tests.viewer.browser import viewer_server
from tests.viewer.conftest import link, make_store


def test_the_demo_heatmap_is_source_sized_and_labelled_r_and_l(analysis, tmp_path: Path):
    settings = Settings(host="127.0.0.1", port=free_port(), viewer_secret="demo-test-secret")
    store = make_store(tmp_path)
    with viewer_server(settings, store):
        url = link(settings, store, analysis)
        response = {"cards": [{"links": [{"label": "Heat map", "url": url, "type": "absolute"}]}]}
        written = write_outputs(tmp_path / "out", {}, response)
    assert tmp_path / "out" / "heatmap.png" in written
    png = Image.open(tmp_path / "out" / "heatmap.png")
    assert png.format == "PNG" and png.size == (2039, 1380)
    rgb = np.asarray(png.convert("RGB")).astype(int)
    # The unlabelled render of the same result: the labels are the only difference.
    bare = overlay(decode_radiograph(analysis.radiograph), upsample_levels(analysis.heat, 1380, 2039), 0.45)
    changed = np.abs(rgb - bare.astype(int)).sum(axis=2) > 0
    right = label_box(1380, 2039, False, 0, 1019)  # the fixture's image-left hip is the patient's right
    left = label_box(1380, 2039, True, 1019, 2039)
    for box in (right, left):
        assert frame_changed(changed, box) > 0.99
    assert changed.sum() <= sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in (right, left))
    # The letters the service used: "R" on the image left and "L" on the image right, as label_hips draws them.
    expected = label_hips(bare, analysis.heatmaps, analysis.image_shape)
    assert np.array_equal(rgb, expected.astype(int))
    assert analysis.heatmaps[0].laterality == "R" and analysis.heatmaps[1].laterality == "L"


def frame_changed(changed, box) -> float:
    """Share of the label's amber frame that differs from the unlabelled render (amber is never a grey
    pixel, so all of it; the black inside may coincide with a collimated, black corner)."""
    x0, y0, x1, y1 = box
    frame = max(2, (y1 - y0) // 14)
    region = changed[y0:y1, x0:x1]
    inner = region[frame:-frame, frame:-frame]
    return float((region.sum() - inner.sum()) / (region.size - inner.size))
