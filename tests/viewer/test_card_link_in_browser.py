"""From a real card to the viewer: the service on uvicorn, the real Triton, Debian chromium."""

from __future__ import annotations

from cds_service.demo import free_port, running_service
from tests.conftest import require
from tests.test_end_to_end import hook_request
from tests.viewer.browser import CHROMIUM, launch_chromium, offline_only

IMAGES_LOADED = "() => [...document.querySelectorAll('#stage img')].every(i => i.complete && i.naturalWidth > 0)"


def test_the_cards_viewer_link_opens_the_heat_map(service_settings_with_triton, ehr_keys, dicom_store):
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (run .ci/install-browser.sh)")
    from playwright.sync_api import sync_playwright

    from cds_service.ehr import send_hook

    # The absolute fallback (HIPCAD_CARD_LINK=absolute): this test opens the link itself, with no EHR to
    # launch a SMART app from (the smart default is followed through the SMART App Launcher in tests/smart).
    settings = service_settings_with_triton.model_copy(update={"port": free_port(), "card_link": "absolute"})
    with running_service(settings) as base_url:
        url = f"{base_url}/cds-services/hip-fracture-order-select"
        answer = send_hook(url, hook_request(dicom_store), ehr_keys[0], settings.jwt_issuer)
        assert answer.status_code == 200
        link = answer.json()["cards"][0]["links"][0]
        assert link["type"] == "absolute" and link["url"].startswith(base_url + "/viewer/")
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
            blocked: list[str] = []
            offline_only(context, blocked)
            page = context.new_page()
            response = page.goto(link["url"])
            assert response is not None and response.status == 200
            page.wait_for_function(IMAGES_LOADED, timeout=10_000)
            text = page.inner_text("body").lower()
            assert "fracture@" in text and ("not for clinical use" in text or "untrained" in text)
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390 + 1  # no horizontal scrolling on a small screen
            browser.close()
            assert blocked == []
