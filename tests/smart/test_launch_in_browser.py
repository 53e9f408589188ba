"""The viewer launched as a SMART app from the real SMART App Launcher, in Debian's chromium.

launcher's EHR launch → /smart/launch (iss, launch) → .well-known/smart-configuration → authorize
(PKCE S256, aud, state) → /smart/callback → token → the patient's latest analysed study (FHIR, with
the launch's token) → the viewer page. Also: a wrong ``state``, a replayed callback, a verifier that
does not match the challenge, and a patient without a result each end on a clear page.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import require
from tests.smart.conftest import WITH_RESULT, WITHOUT_RESULT
from tests.viewer.browser import CHROMIUM, launch_chromium, offline_only

IMAGES_LOADED = "() => [...document.querySelectorAll('#stack img')].every(i => i.complete && i.naturalWidth > 0)"
SCREENSHOT = Path("/tmp/hipcad-smart-launch.png")


@pytest.fixture
def browser_context():
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (run .ci/install-browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        blocked: list[str] = []
        offline_only(context, blocked)
        yield context
        browser.close()
        assert blocked == []


def requests_of(context) -> list[str]:
    seen: list[str] = []
    context.on("request", lambda request: seen.append(request.url) if request.is_navigation_request() else None)
    return seen


def test_ehr_launch_opens_the_patients_heat_map(make_stack, browser_context):
    stack = make_stack(card_link="smart")
    seen = requests_of(browser_context)
    page = browser_context.new_page()
    response = page.goto(stack.launcher.launch_url(f"{stack.service_url}/smart/launch", WITH_RESULT))
    assert response is not None and response.status == 200, page.content()[:1500]
    page.wait_for_function(IMAGES_LOADED, timeout=15_000)
    assert urlsplit(page.url).path.startswith("/viewer/")
    text = page.inner_text("body").lower()
    assert "ai findings" in text and "not for clinical use" in text
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # The launch as the browser went through it.
    launch = next(url for url in seen if urlsplit(url).path == "/smart/launch")
    assert parse_qs(urlsplit(launch).query)["iss"] == [stack.launcher.iss]
    authorize = parse_qs(urlsplit(next(url for url in seen if "/auth/authorize" in url)).query)
    assert authorize["response_type"] == ["code"] and authorize["client_id"] == ["hipcad-viewer"]
    assert authorize["redirect_uri"] == [f"{stack.service_url}/smart/callback"]
    assert authorize["aud"] == [stack.launcher.iss] and authorize["launch"]
    assert authorize["code_challenge_method"] == ["S256"] and len(authorize["code_challenge"][0]) == 43
    assert set(authorize["scope"][0].split()) == {
        "launch",
        "openid",
        "fhirUser",
        "patient/ImagingStudy.rs",
        "patient/DiagnosticReport.rs",
    }
    assert len(authorize["state"][0]) >= 32
    callback = next(url for url in seen if urlsplit(url).path == "/smart/callback")
    assert parse_qs(urlsplit(callback).query)["state"] == authorize["state"]
    assert any(urlsplit(url).path == "/smart/view" for url in seen)

    cookie = next(c for c in browser_context.cookies() if c["name"] == "hipcad_smart")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/smart"
    assert stack.launcher.iss not in cookie["value"] and len(cookie["value"]) >= 40

    # The callback replayed (the same code and state): refused, nothing shown.
    replay = page.goto(callback)
    assert replay is not None and replay.status == 400
    assert "cannot be completed" in page.inner_text("h1").lower()

    # The session's page re-signs a fresh viewer link (a reload after the link's lifetime).
    again = page.goto(f"{stack.service_url}/smart/view")
    assert again is not None and again.status == 200 and urlsplit(page.url).path.startswith("/viewer/")


def walk_to_callback(client: httpx.Client, url: str) -> str:
    """Follow the launch's redirects (launcher, /smart/launch, authorize) up to the callback URL, not into it."""
    for _ in range(10):
        response = client.get(url)
        assert response.status_code in (302, 303), response.text[:500]
        url = str(response.url.join(response.headers["location"]))
        if urlsplit(url).path == "/smart/callback":
            return url
    raise AssertionError("no callback")


def test_a_wrong_state_is_refused(make_stack):
    stack = make_stack()
    with httpx.Client(timeout=30) as client:  # a browser's cookie jar, one hop at a time
        callback = walk_to_callback(client, stack.launcher.launch_url(f"{stack.service_url}/smart/launch", WITH_RESULT))
        query = parse_qs(urlsplit(callback).query)
        forged = client.get(f"{stack.service_url}/smart/callback", params={"code": query["code"][0], "state": "forged"})
        assert forged.status_code == 400 and "cannot be completed" in forged.text
        # The genuine state from another browser (no session cookie) is refused too, and used up.
        with httpx.Client(timeout=30) as other:
            stolen = other.get(callback)
        assert stolen.status_code == 400
        assert client.get(callback).status_code == 400


def test_the_launcher_checks_our_pkce_verifier(make_stack):
    """A verifier that does not match the S256 challenge sent to authorize: the launcher refuses the code."""
    stack = make_stack()
    with httpx.Client(timeout=30) as client:
        callback = walk_to_callback(client, stack.launcher.launch_url(f"{stack.service_url}/smart/launch", WITH_RESULT))
        for pending in stack.sessions._pending.values():
            pending.code_verifier = "x" * 64
        response = client.get(callback)
    assert response.status_code == 502 and "refused" in response.text


def test_a_patient_without_a_result_gets_a_clear_page(make_stack, browser_context):
    stack = make_stack()
    page = browser_context.new_page()
    response = page.goto(stack.launcher.launch_url(f"{stack.service_url}/smart/launch", WITHOUT_RESULT))
    assert response is not None and response.status == 404
    assert "no ai hip fracture result" in page.inner_text("body").lower()
