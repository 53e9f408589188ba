"""The viewer in a real browser: Debian's chromium, headless, through Playwright, no network.

Checks the heat layer renders (pixels differ with the toggle on and off), the opacity slider works,
zoom and pan change the rendered scale and position (buttons, wheel, keys, drag), window/level
changes the pixel values (screenshots compared numerically; the default is the DICOM's own window),
the page fits a phone screen, and expired or tampered links are refused with 403.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from cds_service.demo import free_port
from cds_service.explain.heatmap import decode_radiograph
from cds_service.settings import Settings
from cds_service.store import AsyncStore
from cds_service.viewer import sign
from cds_service.viewer.routes import viewer_secret
from tests.conftest import require
from tests.viewer.browser import CHROMIUM, launch_chromium, offline_only, viewer_server
from tests.viewer.conftest import link, make_store

IMAGES_LOADED = """() => [...document.querySelectorAll('#stage img')]
    .every(img => img.complete && img.naturalWidth > 0) && document.getElementById('windowed') !== null"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (run .ci/install-browser.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
        raise
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(analysis, tmp_path_factory) -> Iterator[tuple[Settings, AsyncStore, str]]:
    settings = Settings(host="127.0.0.1", port=free_port(), viewer_secret="browser-test-secret")
    store = make_store(tmp_path_factory.mktemp("viewer-store"))
    with viewer_server(settings, store):
        yield settings, store, link(settings, store, analysis)


@pytest.fixture
def console_errors() -> list[str]:
    return []


@pytest.fixture
def page(browser, console_errors):
    blocked: list[str] = []
    errors = console_errors
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    offline_only(context, blocked)
    page = context.new_page()
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not blocked, f"the page tried to reach the network: {blocked}"


def shot(page) -> np.ndarray:
    """The viewport as rendered (radiograph canvas, heat layer, R/L markers), RGB."""
    return np.asarray(Image.open(io.BytesIO(page.locator("#viewport").screenshot())).convert("RGB"))


def settle(page) -> None:
    """Wait two animation frames (the window is re-rendered in one)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def set_range(page, selector: str, value: int) -> None:
    page.eval_on_selector(
        selector, "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", value
    )
    settle(page)


def canvas_box(page) -> dict:
    box = page.locator("#windowed").bounding_box()
    assert box is not None
    return box


def opened(page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200
    page.wait_for_function(IMAGES_LOADED, timeout=10_000)
    settle(page)


def heat_opacity(page) -> float:
    return float(page.eval_on_selector("#heat", "el => getComputedStyle(el).opacity"))


def test_overlay_renders_and_controls_work(page, served, console_errors):
    _, _, url = served
    response = page.goto(url)
    assert response.status == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    page.wait_for_function(IMAGES_LOADED, timeout=10_000)
    assert page.get_by_label("Heat-map opacity").input_value() == "45"
    assert heat_opacity(page) == pytest.approx(0.45)
    assert page.get_by_role("alert").inner_text().startswith("NOT FOR CLINICAL USE")

    with_heat = shot(page)
    page.get_by_label("Show heat map").uncheck()
    assert page.eval_on_selector("#heat", "el => getComputedStyle(el).visibility") == "hidden"
    without_heat = shot(page)
    changed = np.abs(with_heat.astype(int) - without_heat.astype(int)).sum(axis=2) > 10
    assert changed.mean() > 0.005, "the heat layer made no visible difference"
    middle = changed.shape[1] // 2
    assert changed[:, :middle].sum() > 20 * changed[:, middle:].sum()  # the heat is on the right hip (image left)
    grey = without_heat[80:].astype(int)  # below the R/L markers (amber frames)
    assert (np.abs(grey[..., 0] - grey[..., 1]) <= 2).all()  # the radiograph alone is grey

    page.get_by_label("Show heat map").check()
    slider = page.locator("#opacity")
    slider.focus()
    slider.press("End")
    assert slider.input_value() == "100" and heat_opacity(page) == 1.0
    assert page.locator("#opacity-value").inner_text() == "100 %"
    full = shot(page)
    stronger = np.abs(full.astype(int) - without_heat.astype(int)).sum()
    assert stronger > 1.5 * np.abs(with_heat.astype(int) - without_heat.astype(int)).sum()
    slider.press("Home")
    assert slider.input_value() == "0" and heat_opacity(page) == 0.0
    assert np.abs(shot(page).astype(int) - without_heat.astype(int)).max() <= 2  # opacity 0 = no heat
    page.locator("#viewport").press("h")  # the keyboard toggle
    assert page.eval_on_selector("#heat", "el => getComputedStyle(el).visibility") == "hidden"
    assert not console_errors, f"console errors (CSP violations?): {console_errors}"


def test_the_radiograph_is_shown_at_source_resolution_in_the_dicom_window(page, served, analysis, console_errors):
    _, _, url = served
    opened(page, url)
    size = page.eval_on_selector("#windowed", "c => [c.width, c.height]")
    assert size == [2039, 1380]
    # Default window = the identity on the decoded image, i.e. the DICOM's own VOI: the canvas holds the
    # served JPEG's pixels (browser and Pillow JPEG decoders may differ by a level or two).
    pixels = page.eval_on_selector(
        "#windowed",
        "c => Array.from(c.getContext('2d').getImageData(900, 600, 40, 30).data.filter((_, i) => i % 4 === 0))",
    )
    expected = decode_radiograph(analysis.radiograph)[600:630, 900:940].astype(int).ravel()
    assert np.abs(np.array(pixels) - expected).max() <= 3
    assert page.locator("#window-value").inner_text() == "DICOM window"
    assert not console_errors, console_errors


def test_zoom_and_pan_change_the_rendered_scale(page, served, console_errors):
    _, _, url = served
    opened(page, url)
    viewport = page.locator("#viewport").bounding_box()
    fit = canvas_box(page)
    assert fit["width"] == pytest.approx(viewport["width"], abs=1)
    before = shot(page)

    page.get_by_role("button", name="Zoom in").click()
    zoomed = canvas_box(page)
    assert zoomed["width"] == pytest.approx(1.5 * fit["width"], rel=0.01)  # the rendered scale changed
    assert page.locator("#zoom-value").inner_text() == "1.5×"
    after = shot(page)
    assert after.shape == before.shape and np.abs(after.astype(int) - before.astype(int)).mean() > 5

    page.get_by_role("button", name="1:1").click()  # one image pixel per CSS pixel
    assert canvas_box(page)["width"] == pytest.approx(2039, rel=0.01)

    page.get_by_role("button", name="Fit", exact=True).click()
    assert canvas_box(page) == pytest.approx(fit, abs=1)

    # The wheel zooms about the pointer: the image point under it stays put.
    x, y = viewport["x"] + viewport["width"] * 0.25, viewport["y"] + viewport["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.wheel(0, -400)
    settle(page)
    wheel = canvas_box(page)
    assert wheel["width"] > 1.5 * fit["width"]
    u = (x - fit["x"]) / fit["width"]
    assert wheel["x"] + u * wheel["width"] == pytest.approx(x, abs=2)

    # Drag pans; the keyboard zooms, pans and fits.
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 40, steps=4)
    page.mouse.up()
    dragged = canvas_box(page)
    assert dragged["x"] == pytest.approx(min(viewport["x"], wheel["x"] + 120), abs=2)
    assert dragged["width"] == pytest.approx(wheel["width"], abs=1)
    keys = page.locator("#viewport")
    keys.press("0")
    assert canvas_box(page) == pytest.approx(fit, abs=1)
    keys.press("+")
    centred = canvas_box(page)
    assert centred["width"] == pytest.approx(1.5 * fit["width"], rel=0.01)
    keys.press("ArrowRight")
    assert canvas_box(page)["x"] == pytest.approx(centred["x"] - 40, abs=1)
    assert not console_errors, console_errors


def test_window_level_changes_the_pixel_values(page, served, console_errors):
    _, _, url = served
    opened(page, url)
    page.get_by_label("Show heat map").uncheck()
    dicom = shot(page).astype(float)[..., 0]

    set_range(page, "#window-width", 64)  # a narrow window around the default level: more contrast
    narrow = shot(page).astype(float)[..., 0]
    assert page.locator("#window-value").inner_text() == "W 64 / L 128"
    assert np.abs(narrow - dicom).mean() > 20  # the pixel values changed
    inside = (dicom > 110) & (dicom < 145)  # levels inside the new window are stretched about the centre
    assert inside.sum() > 1000 and narrow[inside].std() > 3 * dicom[inside].std()
    expected = np.clip((dicom - 127.5) / 63 * 255 + 127.5, 0, 255)
    assert np.median(np.abs(narrow[inside] - expected[inside])) <= 4

    set_range(page, "#window-level", 60)  # a lower level: brighter
    assert shot(page).astype(float)[..., 0].mean() > narrow.mean() + 20

    page.get_by_role("button", name="Reset").click()
    settle(page)
    assert np.abs(shot(page).astype(float)[..., 0] - dicom).max() <= 1
    assert page.locator("#window-value").inner_text() == "DICOM window"

    # Shift-drag windows too: across changes the width, up/down the level.
    box = page.locator("#viewport").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.keyboard.down("Shift")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 100, y - 30, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    settle(page)
    assert page.locator("#window-width").input_value() == "156"
    assert page.locator("#window-level").input_value() == "98"
    assert canvas_box(page)["width"] == pytest.approx(box["width"], abs=1)  # windowing did not pan or zoom
    assert not console_errors, console_errors


def test_page_fits_a_phone_screen(browser, served):
    _, _, url = served
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True)
    blocked: list[str] = []
    offline_only(context, blocked)
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(IMAGES_LOADED, timeout=10_000)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    box = page.locator("#windowed").bounding_box()
    assert width <= 360 and box is not None and box["width"] <= 360
    heat_box = page.locator("#heat").bounding_box()
    assert heat_box == pytest.approx(box, abs=1)  # the heat layer lies exactly on the radiograph
    assert page.locator("#toggle").is_visible() and page.locator("#opacity").is_visible()
    context.close()
    assert not blocked


def test_expired_and_tampered_links_are_refused(page, served):
    settings, store, url = served
    base, token = url.rsplit("/", 1)
    expired = sign(token_result_id(store, url, settings), viewer_secret(settings), ttl_s=5, now=time.time() - 6)
    response = page.goto(f"{base}/{expired}")
    assert response.status == 403
    assert "expired" in page.locator("h1").inner_text()
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (f"{base}/{tampered}", f"{base}/{tampered}/heat.png", f"{base}/x{token}"):
        response = page.goto(bad)
        assert response.status == 403, bad
        assert "not valid" in page.locator("h1").inner_text()


def token_result_id(store: AsyncStore, url: str, settings: Settings) -> str:
    from cds_service.viewer import verify

    return verify(url.rsplit("/", 1)[1], viewer_secret(settings))
