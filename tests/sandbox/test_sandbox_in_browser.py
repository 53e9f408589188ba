"""The README's sandbox recipe, driven in headless chromium: the real CDS Hooks sandbox (CDS Hooks 2.0
"EHR" side: discovery, hook calls with an ES384 JWT, feedback) against the real service, the real Triton
and the FHIR test server. Every host that is not loopback is blocked in the browser context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.sandbox.conftest import SandboxStack
from tests.sandbox.stack import PATIENT
from tests.viewer.browser import launch_chromium, offline_only

#: The sandbox's own demo services, which it always tries to discover too (blocked: not loopback).
SANDBOX_DEMO_SERVICES = "sandbox-services.cds-hooks.org"
#: Screenshots of the sandbox showing our cards (looked at by people; not compared).
SCREENSHOTS = Path("/tmp")
IMAGES_LOADED = "() => [...document.querySelectorAll('#stage img')].every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture
def browser_context() -> Iterator[tuple[Any, list[str]]]:
    """A fresh chromium context (clean localStorage) that aborts every non-loopback request; yields it and
    the list of blocked URLs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        blocked: list[str] = []
        offline_only(context, blocked)
        yield context, blocked
        browser.close()


def feedback_count(service: str, outcome: str) -> float:
    """``hipcad_feedback_total{outcome}`` as the service's ``/metrics`` reports it."""
    text = httpx.get(f"{service}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hipcad_feedback_total" and sample.labels.get("outcome") == outcome:
                return sample.value
    return 0.0


def hook_call(response: Any, hook: str, body_contains: str = "") -> bool:
    """``response`` answers a call of our ``hook`` service whose request body has ``body_contains``."""
    request = response.request
    return (
        request.method == "POST"
        and request.url.endswith(f"/cds-services/hip-fracture-{hook}")
        and body_contains in (request.post_data or "")
    )


def choose_order(page: Any, cpt: str, display: str) -> None:
    """Pick the CPT code from the PAMA tab's order search (a react-select: type, then click the option)."""
    page.get_by_text("Search orders").click()
    page.keyboard.type(cpt)
    page.get_by_text(display, exact=True).click()


def finding_card(body: dict) -> dict:
    """The one card of ``body``, checked to be a finding (its suggestion creates the AI DiagnosticReport),
    not a failure card."""
    [card] = body["cards"]
    resources = [action.get("resource", {}) for s in card.get("suggestions", []) for action in s["actions"]]
    assert any(resource.get("resourceType") == "DiagnosticReport" for resource in resources), card["summary"]
    assert card["summary"].startswith("AI") and "not for clinical use" in card["source"]["label"]
    return card


def only_demo_services_blocked(blocked: list[str]) -> bool:
    return {urlsplit(url).hostname for url in blocked} <= {SANDBOX_DEMO_SERVICES}


def test_pama_ct_pelvis_order_gets_a_finding_card_its_viewer_link_opens_and_an_override_is_counted(
    sandbox: SandboxStack, browser_context: tuple[Any, list[str]]
) -> None:
    context, blocked = browser_context
    page = context.new_page()
    with page.expect_response(sandbox.discovery) as discovery:
        page.goto(sandbox.page(hook="order-select", screen="pama"))
    assert discovery.value.status == 200
    services = {service["id"]: service["hook"] for service in discovery.value.json()["services"]}
    assert services.get("hip-fracture-order-select") == "order-select"
    page.get_by_text("Patient: ").wait_for()
    assert PATIENT in page.inner_text("body")  # the Patient read from the open FHIR endpoint

    # CPT 72192, CT pelvis without contrast: the PAMA tab's draft ServiceRequest in order-select.
    with page.expect_response(lambda r: hook_call(r, "order-select", "72192"), timeout=90_000) as hook:
        choose_order(page, "72192", "Computed tomography, pelvis; without contrast material")
    assert hook.value.status == 200
    card = finding_card(hook.value.json())
    page.get_by_text(card["summary"], exact=True).wait_for()  # the rendered card, not the JSON panel
    page.screenshot(path=str(SCREENSHOTS / "hipcad-sandbox-order-select-card.png"), full_page=True)

    # The card's link opens the heat-map viewer in a new tab.
    with context.expect_page() as viewer_tab:
        page.get_by_role("button", name="View heat map").click()
    viewer = viewer_tab.value
    viewer.wait_for_load_state()
    assert viewer.url.startswith(f"{sandbox.service}/viewer/")
    viewer.wait_for_function(IMAGES_LOADED, timeout=15_000)
    assert "not for clinical use" in viewer.inner_text("body").lower()
    viewer.screenshot(path=str(SCREENSHOTS / "hipcad-sandbox-viewer.png"))
    viewer.close()

    # Dismiss with a reason: the sandbox sends "overridden" feedback, which the service counts.
    before = feedback_count(sandbox.service, "overridden")
    page.get_by_label("select dismiss reason").click()
    with page.expect_response(lambda r: r.url.endswith("/hip-fracture-order-select/feedback")) as feedback:
        page.get_by_role("menuitem", name="Override: Disagree with the AI finding").click()
    assert feedback.value.status == 200
    assert feedback_count(sandbox.service, "overridden") == before + 1
    assert only_demo_services_blocked(blocked), blocked


def test_patient_view_shows_the_finding_card(sandbox: SandboxStack, browser_context: tuple[Any, list[str]]) -> None:
    context, blocked = browser_context
    page = context.new_page()
    answers: list[dict] = []
    # The first call may start the analysis and answer before it ends (the generic profile): the EHR calls
    # the hook again on the next opening of the chart (a reload), as a clinician would.
    for attempt in range(10):
        with page.expect_response(lambda r: hook_call(r, "patient-view", PATIENT), timeout=90_000) as hook:
            if attempt == 0:
                page.goto(sandbox.page(hook="patient-view", screen="patient-view"))
            else:
                page.wait_for_timeout(3_000)
                page.reload()
        assert hook.value.status == 200
        answers.append(hook.value.json())
        if answers[-1]["cards"]:
            break
    card = finding_card(answers[-1])
    page.get_by_text(card["summary"], exact=True).wait_for()  # the rendered card, not the JSON panel
    page.screenshot(path=str(SCREENSHOTS / "hipcad-sandbox-patient-view-card.png"), full_page=True)
    assert only_demo_services_blocked(blocked), blocked


def test_pama_mri_hip_gets_a_card_and_fetal_mri_none(
    sandbox: SandboxStack, browser_context: tuple[Any, list[str]]
) -> None:
    context, blocked = browser_context
    page = context.new_page()
    page.goto(sandbox.page(hook="order-select", screen="pama"))
    with page.expect_response(lambda r: hook_call(r, "order-select", "74712")) as fetal:
        choose_order(
            page,
            "74712",
            "Magnetic resonance (eg, proton) imaging, fetal, including placental and maternal pelvic imaging "
            "when performed; single or first gestation",
        )
    assert fetal.value.status == 200 and fetal.value.json() == {"cards": []}  # not a hip or pelvis study order
    page.get_by_text("No recommendations to display").wait_for()

    page.goto(sandbox.page(hook="order-select", screen="pama"))
    with page.expect_response(lambda r: hook_call(r, "order-select", "73721"), timeout=90_000) as mri:
        choose_order(
            page,
            "73721",
            "Magnetic resonance (eg, proton) imaging, any joint of lower extremity; without contrast material",
        )
    assert mri.value.status == 200
    card = finding_card(mri.value.json())
    page.get_by_text(card["summary"], exact=True).wait_for()
    assert only_demo_services_blocked(blocked), blocked
