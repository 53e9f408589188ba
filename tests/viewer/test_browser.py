"""The viewer in a real browser: Debian's chromium, headless, through Playwright, no network.

Checks the heat layer renders (pixels differ with the toggle on and off), the opacity slider works,
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
from cds_service.settings import Settings
from cds_service.store import AsyncStore
from cds_service.viewer import sign
from cds_service.viewer.routes import viewer_secret
from tests.conftest import require
from tests.viewer.browser import CHROMIUM, launch_chromium, offline_only, viewer_server
from tests.viewer.conftest import link, make_store

IMAGES_LOADED = """() => [...document.querySelectorAll('#stack img')]
    .every(img => img.complete && img.naturalWidth > 0)"""


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
    return np.asarray(Image.open(io.BytesIO(page.locator("#stack img.radiograph").screenshot())).convert("RGB"))


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
    grey = without_heat.astype(int)
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
    assert not console_errors, f"console errors (CSP violations?): {console_errors}"


def test_page_fits_a_phone_screen(browser, served):
    _, _, url = served
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True)
    blocked: list[str] = []
    offline_only(context, blocked)
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(IMAGES_LOADED, timeout=10_000)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    box = page.locator("#stack img.radiograph").bounding_box()
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
