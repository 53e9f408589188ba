"""Write ``docs/viewer.png``: the viewer in Debian's chromium, on the demo's sample radiograph.

    .venv/bin/python -m tests.viewer.screenshot [OUTPUT] [--phone PHONE_OUTPUT]

The radiograph is the demo's sample study (``write_sample_study(seed=7)``: a right Garden III
phantom) decoded and split exactly as the pipeline does. The shipped models are untrained exports
whose heat maps are empty, so the findings and the heat map in the screenshot are an illustration
(a Gaussian over the phantom's fractured femoral neck) and the page's disclaimer says so.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pydicom

from cds_service.demo import free_port
from cds_service.dicom.decode import decode_dataset
from cds_service.dicom.preprocess import display_image, split_hips
from cds_service.explain.heatmap import HipHeatmap, heat_canvas, render_overlay_png
from cds_service.findings import HipFinding, StudyFindings
from cds_service.inference.client import ModelInfo
from cds_service.pipeline import Analysis
from cds_service.settings import Settings
from cds_service.training import phantoms
from cds_service.viewer import ResultStore, viewer_link
from tests.viewer.browser import launch_chromium, offline_only, viewer_server

DISCLAIMER = "Documentation screenshot: the findings and heat map are an illustration, not model output."


def illustration_model(name: str, classes: tuple[str, ...]) -> ModelInfo:
    return ModelInfo(name, "1", classes, 224, "resnet18", "illustration", DISCLAIMER, 0.5, None, None)


def sample_analysis(folder: Path) -> Analysis:
    """The sample study through decode → split, with an illustrative heat map on the fractured hip."""
    seed = 7
    path = phantoms.write_sample_study(folder, seed=seed)
    image = decode_dataset(pydicom.dcmread(path))
    rng = np.random.default_rng(seed)
    phantom = phantoms.render(rng, "garden_III", "none")
    _, truth = phantoms.to_dataset(phantom, phantoms.SITES["site-c"], seed)
    fractured = next(h for h in truth if h.label != "none" and h.box is not None)
    crops = split_hips(image, 224)
    heatmaps = []
    for crop in crops:
        x0, y0, x1, y1 = crop.box
        cam = np.zeros((56, 56), dtype=np.float32)
        if crop.laterality == fractured.side:
            fx0, fy0, fx1, fy1 = fractured.box  # type: ignore[misc]
            cx, cy = ((fx0 + fx1) / 2 - x0) / (x1 - x0), ((fy0 + fy1) / 2 - y0) / (y1 - y0)
            if crop.mirrored:
                cx = 1 - cx
            yy, xx = np.mgrid[0:56, 0:56] / 55
            cam = np.exp(-((yy - cy) ** 2 / (2 * 0.08**2) + (xx - cx) ** 2 / (2 * 0.11**2))).astype(np.float32)
        heatmaps.append(HipHeatmap(crop.laterality, cam, crop.mirrored, crop.box))
    display = display_image(image)
    heat = heat_canvas(heatmaps, image.pixels.shape, display.shape)
    findings = StudyFindings(
        hips=[
            HipFinding(c.laterality, 0.94, True, (0.02, 0.04, 0.64, 0.30))
            if c.laterality == fractured.side
            else HipFinding(c.laterality, 0.03, False, (0.25, 0.25, 0.25, 0.25))
            for c in crops
        ],
        fracture_model=illustration_model("fracture", ("no_fracture", "fracture")),
        garden_model=illustration_model("garden", ("garden_I", "garden_II", "garden_III", "garden_IV")),
        sop_instance_uid=str(image.sop_instance_uid),
    )
    png = render_overlay_png(display, heatmaps, image.pixels.shape, heat=heat)
    return Analysis(findings, png, image.pixels.shape, heatmaps, display, heat.astype(np.float16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="docs/viewer.png", type=Path)
    parser.add_argument("--phone", type=Path, help="also write a 360 px wide (phone) screenshot here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        analysis = sample_analysis(Path(folder))
    settings = Settings(host="127.0.0.1", port=free_port())
    store = ResultStore(settings.result_ttl_s)
    with viewer_server(settings, store), sync_playwright() as playwright:
        url = viewer_link(settings, store, analysis)
        browser = launch_chromium(playwright)
        shots = [(args.output, {"width": 1280, "height": 760}, 1)]
        if args.phone:
            shots.append((args.phone, {"width": 360, "height": 740}, 2))
        for output, viewport, scale in shots:
            context = browser.new_context(viewport=viewport, device_scale_factor=scale)
            blocked: list[str] = []
            offline_only(context, blocked)
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output), full_page=True)
            context.close()
            assert not blocked, blocked
            print(f"wrote {output}")
        browser.close()


if __name__ == "__main__":
    main()
