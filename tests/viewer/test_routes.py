"""The viewer's routes around a real Analysis: page, images, headers, refusals, links."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import time

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from cds_service.domain import FEMORAL_NECK, TROCHANTERIC
from cds_service.explain.heatmap import COLORMAP, decode_radiograph, label_box, overlay, upsample_levels
from cds_service.settings import Settings
from cds_service.viewer import build_router, sign, smart_app_context
from cds_service.viewer.routes import heat_rgba, viewer_secret
from tests.conftest import require
from tests.test_end_to_end import hook_request, post
from tests.viewer.conftest import SECRET, link, make_analysis, make_store, stored_key, token, with_site
from tests.viewer.test_demo_heatmap import frame_changed


def path_of(url: str) -> str:
    return url.removeprefix("http://127.0.0.1:8080")


def check_headers(response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_viewer_link_is_absolute_and_signed(viewer_settings, store, analysis):
    url = link(viewer_settings, store, analysis)
    assert url.startswith("http://127.0.0.1:8080/viewer/")
    signed = url.rsplit("/", 1)[1]
    payload = base64.urlsafe_b64decode(signed.split(".")[0] + "==").decode()
    assert "pat-" not in payload and "1.2.3" not in payload  # no patient or study data


def test_page_shows_findings_controls_and_disclaimer(viewer_client, viewer_settings, store, analysis):
    response = viewer_client.get(path_of(link(viewer_settings, store, analysis)))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    check_headers(response)
    page = response.text
    assert "NOT FOR CLINICAL USE" in page and "synthetic phantoms" in page
    assert 'id="opacity"' in page and 'id="toggle"' in page
    assert '<label for="opacity">' in page and '<label class="toggle" for="toggle">' in page
    assert "Right hip" in page and "Left hip" in page
    assert "94\u00a0%" in page and "3\u00a0%" in page
    assert "Suspected fracture" in page and "No fracture suspected" in page
    assert "Uncertain: no Garden stage" in page  # today's two-class models: no site, so no stage
    assert "Garden stage," not in page and "Garden I–IV" not in page and "P(displaced)" not in page
    assert "fracture@1" in page and "garden@1" in page
    assert 'name="viewport"' in page and "alt=" in page
    assert "http" not in page.replace("http-equiv", "")  # no external assets, no absolute URLs
    assert "<script>" not in page and "<style" not in page and " style=" not in page  # CSP: no inline code


def test_unknown_laterality_is_labelled_with_a_question_mark(viewer_client, viewer_settings, store, phantom_grey):
    analysis = make_analysis(phantom_grey, right=0.2)
    findings = analysis.findings
    hips = [type(h)(None, h.fracture_probability, h.fractured, h.garden_probabilities) for h in findings.hips]
    analysis = type(analysis)(
        type(findings)(hips, findings.fracture_model, findings.garden_model, findings.sop_instance_uid),
        analysis.chart,
        analysis.image_shape,
        analysis.heatmaps,
        analysis.display,
        analysis.heat,
    )
    page = viewer_client.get(path_of(link(viewer_settings, store, analysis))).text
    assert page.count(">?</span>") == 4  # two on the image, two in the findings
    assert "Side unknown" in page and "Garden stage" not in page


def test_images_match_the_analysis(viewer_client, viewer_settings, store, analysis, phantom_grey):
    base = path_of(link(viewer_settings, store, analysis))
    grey = viewer_client.get(base + "/radiograph")
    heat = viewer_client.get(base + "/heat.png")
    assert grey.status_code == 200 and grey.headers["content-type"] == "image/jpeg"
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    for response in (grey, heat):
        check_headers(response)
    grey_image = Image.open(io.BytesIO(grey.content))
    assert grey_image.mode == "L" and grey_image.size == (2039, 1380)  # the source resolution, not 768 × 520
    mse = ((np.asarray(grey_image).astype(float) - phantom_grey) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 40  # PSNR: visually lossless on the (noisy) phantom
    assert len(grey.content) < 1_500_000  # and the store stays sane (the raw array is 2.8 MB)
    small = viewer_client.get(base + "/radiograph.png")  # the display-size PNG, kept for older clients
    assert small.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(small.content))), analysis.display)
    rgba = np.asarray(Image.open(io.BytesIO(heat.content)))
    assert rgba.shape == (*analysis.display.shape, 4)
    values = analysis.heat.astype(np.float32) / 255  # uint8 levels
    assert (rgba[values < 0.2, 3] == 0).all()  # cold areas are transparent
    hot = np.unravel_index(np.argmax(values), values.shape)
    level = int(analysis.heat[hot])
    assert level >= 250 and rgba[hot][3] >= 253 and tuple(rgba[hot][:3]) == tuple(COLORMAP[level])
    middle = analysis.display.shape[1] // 2
    assert rgba[:, :middle, 3].any() and not rgba[:, middle + 1 :, 3].any()  # heat only on the right hip


def test_a_result_stored_without_the_source_image_shows_the_display_copy(
    viewer_client, viewer_settings, store, analysis
):
    older = dataclasses.replace(analysis, radiograph=None, study=None)  # as stored before both were kept
    base = path_of(link(viewer_settings, store, older))
    grey = viewer_client.get(base + "/radiograph")
    assert grey.status_code == 200 and grey.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(grey.content))), analysis.display)
    page = viewer_client.get(base).text
    assert 'width="768" height="520"' in page and "Study identification was not kept" in page


def test_page_identifies_the_study_and_offers_the_reading_tools(viewer_client, viewer_settings, store, analysis):
    page = viewer_client.get(path_of(link(viewer_settings, store, analysis))).text
    assert "<dt>Study date</dt><dd>2026-12-05 10:15</dd>" in page
    assert "<dd>XR PELVIS AP (synthetic phantom)</dd>" in page and "<dt>Accession</dt><dd>ACC700000</dd>" in page
    assert 'src="' in page and 'width="2039" height="1380"' in page
    for control in ("zoom-in", "zoom-out", "zoom-fit", "zoom-actual", "window-width", "window-level", "window-reset"):
        assert f'id="{control}"' in page, control
    assert 'id="window-width" min="2" max="256" step="1" value="256"' in page  # identity = the DICOM's own window
    assert "ACC700000" not in page.split("<body>")[0]  # not in the title (browser history)


def test_no_midline_is_drawn(viewer_client):
    css = viewer_client.get("/viewer/static/viewer.css").text
    assert "dashed" not in css and "border-right" not in css


def test_study_identity_is_never_logged(viewer_client, viewer_settings, store, analysis, caplog):
    caplog.set_level(logging.DEBUG)
    base = path_of(link(viewer_settings, store, analysis))
    for suffix in ("", "/radiograph", "/heat.png", "/overlay.png"):
        assert viewer_client.get(base + suffix).status_code == 200
    logged = caplog.text
    assert "ACC700000" not in logged and "XR PELVIS" not in logged and "20261205" not in logged


def test_overlay_png_is_source_sized_and_labelled(viewer_client, viewer_settings, store, analysis, phantom_grey):
    response = viewer_client.get(path_of(link(viewer_settings, store, analysis)) + "/overlay.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    rgb = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    assert rgb.shape == (1380, 2039, 3)
    bare = overlay(decode_radiograph(analysis.radiograph), upsample_levels(analysis.heat, 1380, 2039), 0.45)
    changed = np.abs(rgb - bare.astype(int)).sum(axis=2) > 0
    for mirrored, x0, x1 in ((False, 0, 1019), (True, 1019, 2039)):  # R on the image left, L on the image right
        assert frame_changed(changed, label_box(1380, 2039, mirrored, x0, x1)) > 0.99
    assert changed.sum() <= sum(  # nothing else drawn: no midline
        (b[2] - b[0]) * (b[3] - b[1])
        for b in (label_box(1380, 2039, False, 0, 1019), label_box(1380, 2039, True, 1019, 2039))
    )


def test_heat_rgba_alpha_rises_with_heat():
    rgba = heat_rgba(np.array([[0.0, 0.19, 0.25, 0.6, 1.0, np.nan]], dtype=np.float16))
    assert [int(a) for a in rgba[0, :, 3]] == [0, 0, 159, 204, 255, 0]


def test_static_assets_are_served_and_unknown_ones_are_not(viewer_client):
    js = viewer_client.get("/viewer/static/viewer.js")
    css = viewer_client.get("/viewer/static/viewer.css")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "opacity" in js.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "http" not in js.text and "@import" not in css.text and "url(" not in css.text
    assert viewer_client.get("/viewer/static/routes.py").status_code == 404
    assert viewer_client.get("/viewer/static/other.js").status_code == 404


@pytest.mark.parametrize("suffix", ["", "/radiograph", "/radiograph.png", "/heat.png", "/overlay.png"])
def test_expired_link_is_refused_with_403(viewer_client, viewer_settings, store, analysis, suffix):
    result_id = store.sql.put_viewer_link(stored_key(store, analysis).digest(), 3600)
    expired = sign(result_id, viewer_secret(viewer_settings), ttl_s=60, now=time.time() - 61)
    response = viewer_client.get(f"/viewer/{expired}{suffix}")
    assert response.status_code == 403
    assert "expired" in response.text
    check_headers(response)


@pytest.mark.parametrize("suffix", ["", "/radiograph", "/heat.png", "/overlay.png", "/renew"])
def test_tampered_link_is_refused_with_403(viewer_client, viewer_settings, store, analysis, suffix):
    signed = token(viewer_settings, store, analysis)
    tampered = signed[:-2] + ("AA" if not signed.endswith("AA") else "BB")
    for bad in (tampered, "garbage", "a.b", "x" * 2000, sign("guessed", b"other key", 60)):
        response = viewer_client.get(f"/viewer/{bad}{suffix}")
        assert response.status_code == 403, bad
        assert "not valid" in response.text
        check_headers(response)


def test_link_signed_by_another_process_key_is_refused(viewer_settings, store, analysis):
    other = viewer_settings.model_copy(update={"viewer_secret": ""})  # the random per-process key
    signed = token(other, store, analysis)
    app = FastAPI()
    app.include_router(build_router(viewer_settings, store))
    assert TestClient(app).get(f"/viewer/{signed}").status_code == 403
    app_default = FastAPI()
    app_default.include_router(build_router(other, store))
    assert TestClient(app_default).get(f"/viewer/{signed}").status_code == 200


def test_a_database_without_a_viewer_secret_is_refused(viewer_settings):
    """Replicas sharing a database must share the key: no per-process key then."""
    shared = viewer_settings.model_copy(update={"viewer_secret": "", "database_url": "postgresql://db/hipcad"})
    with pytest.raises(ValueError, match="HIPCAD_VIEWER_SECRET"):
        viewer_secret(shared)


def test_result_no_longer_kept_gets_404(viewer_settings, store, analysis):
    app = FastAPI()
    app.include_router(build_router(viewer_settings, store))
    signed = token(viewer_settings, store, analysis)
    assert TestClient(app).get(f"/viewer/{signed}").status_code == 200
    store.sql.clear_results()  # expired and purged
    response = TestClient(app).get(f"/viewer/{signed}")
    assert response.status_code == 404 and "no longer available" in response.text
    check_headers(response)


def test_link_lifetime_is_capped_by_the_result_ttl(viewer_settings, tmp_path, analysis):
    settings = viewer_settings.model_copy(update={"result_ttl_s": 100})
    signed = token(settings, make_store(tmp_path), analysis, now=1_000_000.0)
    payload = base64.urlsafe_b64decode(signed.split(".")[0] + "==").decode()
    assert payload.endswith(".1000100")


def test_smart_app_context_is_a_json_string_with_the_token():
    context = smart_app_context("tok.en")
    assert isinstance(context, str)
    assert json.loads(context) == {"hipcadViewerToken": "tok.en", "viewerPath": "/viewer/tok.en"}


def test_real_pipeline_result_is_viewable(service, ehr_keys, dicom_store, viewer_settings, tmp_path):
    """A real analysis (Triton, the sample right Garden III phantom) through the viewer."""
    response = post(service, ehr_keys[0], hook_request(dicom_store))
    assert response.status_code == 200, response.text
    stored = service.app.state.pipeline.store
    keys = stored.local_keys()
    require(bool(keys), "the pipeline cached no analysis")
    analysis = stored.local(keys[-1])
    store = make_store(tmp_path)
    app = FastAPI()
    app.include_router(build_router(viewer_settings, store))
    client = TestClient(app)
    base = path_of(link(viewer_settings, store, analysis))
    page = client.get(base)
    assert page.status_code == 200
    for hip in analysis.findings.hips:
        assert f"{100 * hip.fracture_probability:.0f}\u00a0%" in page.text
    assert analysis.findings.fracture_model.label in page.text
    # The pipeline keeps the source-resolution radiograph and the study's identity from the DICOM header.
    rows, cols = analysis.image_shape
    assert analysis.radiograph is not None and analysis.radiograph.size == (cols, rows)
    assert f'width="{cols}" height="{rows}"' in page.text
    assert analysis.study is not None and analysis.study.accession and analysis.study.accession in page.text
    assert client.get(base + "/radiograph").headers["content-type"] == "image/jpeg"
    heat = np.asarray(Image.open(io.BytesIO(client.get(base + "/heat.png").content)))
    assert heat.shape == (*analysis.display.shape, 4)
    # Visible exactly where the heat reaches the floor (the shipped untrained models may give none).
    assert np.array_equal(heat[..., 3] > 0, analysis.heat.astype(np.float32) / 255 >= 0.2)


def test_a_femoral_neck_fracture_is_staged_as_conditional(viewer_client, viewer_settings, store, analysis):
    page = viewer_client.get(path_of(link(viewer_settings, store, with_site(analysis, FEMORAL_NECK)))).text
    assert "Femoral neck" in page and "<strong>III</strong> — displaced (Garden III–IV)" in page
    assert page.count("Garden stage, if a femoral-neck fracture") == 1  # only the fractured hip is staged


def test_a_trochanteric_fracture_gets_no_garden_stage(viewer_client, viewer_settings, store, analysis):
    page = viewer_client.get(path_of(link(viewer_settings, store, with_site(analysis, TROCHANTERIC)))).text
    assert "Trochanteric (no Garden stage)" in page
    assert "Garden stage," not in page and "Garden I–IV" not in page and "P(displaced)" not in page


def test_certainties_are_bounded(viewer_client, viewer_settings, store, phantom_grey):
    page = viewer_client.get(path_of(link(viewer_settings, store, make_analysis(phantom_grey, right=0.999)))).text
    assert ">\u00a099\u00a0%" in page and "100\u00a0%" not in page


def test_links_live_24_hours_by_default(tmp_path, analysis):
    settings = Settings(viewer_secret=SECRET)
    assert settings.viewer_link_ttl_s == settings.result_ttl_s == 24 * 3600
    signed = token(settings, make_store(tmp_path), analysis, now=1_000_000.0)
    payload = base64.urlsafe_b64decode(signed.split(".")[0] + "==").decode()
    assert payload.endswith(f".{1_000_000 + 24 * 3600}")


def expired_token(settings, store, analysis, ago_s: float) -> str:
    """A genuine token for a stored result that expired ``ago_s`` seconds ago."""
    result_id = store.sql.put_viewer_link(stored_key(store, analysis).digest(), 3600)
    return sign(result_id, viewer_secret(settings), ttl_s=60, now=time.time() - 60 - ago_s)


def test_an_expired_link_is_renewed_within_the_grace_period(viewer_client, viewer_settings, store, analysis):
    expired = expired_token(viewer_settings, store, analysis, ago_s=600)
    page = viewer_client.get(f"/viewer/{expired}")
    assert page.status_code == 403 and f"href='/viewer/{expired}/renew'" in page.text  # offered on the card's link
    renewed = viewer_client.get(f"/viewer/{expired}/renew", follow_redirects=False)
    assert renewed.status_code == 303
    check_headers(renewed)
    fresh = renewed.headers["location"]
    assert fresh.startswith("/viewer/") and fresh != f"/viewer/{expired}"
    assert viewer_client.get(fresh).status_code == 200
    assert viewer_client.get(fresh + "/radiograph").status_code == 200


def test_renewal_is_refused_past_the_grace_period_or_when_off(viewer_settings, store, analysis):
    late = expired_token(viewer_settings, store, analysis, ago_s=viewer_settings.viewer_renew_grace_s + 10)
    app = FastAPI()
    app.include_router(build_router(viewer_settings, store))
    client = TestClient(app)
    assert client.get(f"/viewer/{late}/renew", follow_redirects=False).status_code == 403
    assert "/renew" not in client.get(f"/viewer/{late}").text
    off = viewer_settings.model_copy(update={"viewer_renew_grace_s": 0})
    app_off = FastAPI()
    app_off.include_router(build_router(off, store))
    recent = expired_token(off, store, analysis, ago_s=5)
    response = TestClient(app_off).get(f"/viewer/{recent}/renew", follow_redirects=False)
    assert response.status_code == 403 and "expired" in response.text


def test_renewal_needs_the_result_still_kept(viewer_settings, store, analysis):
    expired = expired_token(viewer_settings, store, analysis, ago_s=5)
    store.sql.clear_results()
    app = FastAPI()
    app.include_router(build_router(viewer_settings, store))
    assert TestClient(app).get(f"/viewer/{expired}/renew", follow_redirects=False).status_code == 404
