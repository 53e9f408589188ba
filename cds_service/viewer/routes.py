"""The viewer's HTTP routes, its signed links, and the SMART ``appContext``.

    GET /viewer/{token}                 the page (study, radiograph, heat layer, tools, findings)
    GET /viewer/{token}/radiograph      the grey radiograph at source resolution (JPEG; PNG at display
                                        size for results stored before the source-resolution copy was kept)
    GET /viewer/{token}/radiograph.png  the display-size grey PNG (what the page showed before; kept for clients)
    GET /viewer/{token}/heat.png        the heat layer (RGBA: colour map, alpha from the heat value)
    GET /viewer/{token}/overlay.png     radiograph + heat + R/L labels, one PNG at source resolution
    GET /viewer/{token}/renew           a fresh link for a genuine one expired within the grace period
    GET /viewer/{token}/assessments     the clinicians' assessments of the result as a FHIR R4 Bundle
    GET /viewer/static/viewer.{js,css}  the page's script and style (no CDN, no inline code)

The page shows the radiograph at source resolution with zoom and pan, window/level (default: the
DICOM's own window, i.e. the VOI the decoder applied), the heat layer (on/off, opacity) and the
study's date, description and accession number. Those identify the patient's study: they are on
the page the signed link opens and nowhere else (no log line, metric or span carries them).

Link lifetime and renewal: a token lives ``HIPCAD_VIEWER_LINK_TTL_S`` (default 24 h, capped by the
result TTL); every hook answered re-signs a fresh link on its card; and a card left in the chart
past expiry can be renewed: its genuine link, expired less than ``HIPCAD_VIEWER_RENEW_GRACE_S``
ago, is exchanged at ``/renew`` for a new one while the result is still kept (the link row lives as
long as the result). An altered token never renews.

Clinician assessments: the page lists every accept/override (CDS Hooks feedback) sent for a card
that showed this result, oldest first, with its time and override reason; ``/assessments`` returns
the same as FHIR (:mod:`cds_service.fhir.assessment`). The export is authorised by the signed token,
like every route here, not by a CDS Hooks JWT: the token names exactly one result, and results are
keyed by the calling EHR (issuer and tenant), so whoever holds a card's link reads that result's
assessments and nothing else; a JWT would name an EHR, not a result, and the feedback table keeps no
tenant to scope it by. A renewed token reads the same result.

Every answer carries ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer`` (the token is in
the path) and a strict Content-Security-Policy. An expired or altered link gets a small 403 page,
a result no longer kept a 404 page — never a 500.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cds_service.cdshooks.cards import Tier, percent, tier
from cds_service.cdshooks.feedback import Assessment, assessments
from cds_service.domain import FEMORAL_NECK, TROCHANTERIC, StudyIdentity
from cds_service.explain.heatmap import (
    COLORMAP,
    decode_radiograph,
    heat_levels,
    label_hips,
    overlay,
    png_bytes,
    upsample_levels,
)
from cds_service.fhir.assessment import assessment_bundle
from cds_service.findings import GARDEN_STAGES, HipFinding, StudyFindings
from cds_service.settings import Settings
from cds_service.viewer.signing import InvalidToken, LinkExpired, sign, verify, verify_renewable

if TYPE_CHECKING:
    from collections.abc import Callable

    from cds_service.domain import Analysis, ResultKey
    from cds_service.store import AsyncStore

log = logging.getLogger(__name__)

#: One random key per process when ``HIPCAD_VIEWER_SECRET`` is empty (links die on restart).
_PROCESS_SECRET = secrets.token_bytes(32)

#: Heat values below this stay transparent (same floor as the report's overlay PNG).
HEAT_FLOOR = 0.2
#: Initial opacity of the heat layer, percent (the report's overlay uses 0.45).
DEFAULT_OPACITY = 45
#: Initial window (width, centre) on the decoded 8-bit image: the identity, i.e. the DICOM's own VOI
#: (Window Center/Width or VOI LUT, applied by the decoder; PS3.3 C.11.2.1.2.1 linear function).
WINDOW_WIDTH, WINDOW_LEVEL = 256, 128

# frame-ancestors is left open on purpose: EHRs embed SMART apps in iframes.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "connect-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
}
_STATIC_TYPES = {"viewer.js": "text/javascript; charset=utf-8", "viewer.css": "text/css; charset=utf-8"}


def viewer_secret(settings: Settings) -> bytes:
    """The HMAC key: ``settings.viewer_secret``, or (single process, no database) the process's random key.

    With ``HIPCAD_DATABASE_URL`` set several replicas share the links, so they must share the key:
    an empty secret is then a configuration error, never a per-process key.
    """
    if settings.viewer_secret:
        return settings.viewer_secret.encode()
    if settings.database_url:
        raise ValueError("HIPCAD_VIEWER_SECRET must be set when HIPCAD_DATABASE_URL is (replicas share viewer links)")
    return _PROCESS_SECRET


def link_ttl_s(settings: Settings) -> int:
    """A token's lifetime: the link TTL, capped by the result TTL."""
    return min(settings.viewer_link_ttl_s, settings.result_ttl_s)


async def issue_token(settings: Settings, store: AsyncStore, key: ResultKey, now: float | None = None) -> str:
    """A signed token for the stored result ``key`` (valid ≤ the link TTL and the result TTL).

    The store's link row lives as long as the result (so a renewed token still finds it); the
    token's own expiry is what limits a link.
    """
    result_id = await store.viewer_link(key, settings.result_ttl_s)
    return sign(result_id, viewer_secret(settings), link_ttl_s(settings), now=now)


def viewer_url(settings: Settings, token: str) -> str:
    """The absolute URL of the viewer page for ``token``."""
    return f"{settings.base_url()}/viewer/{token}"


async def viewer_link(settings: Settings, store: AsyncStore, key: ResultKey) -> str:
    """The absolute, signed, short-lived viewer URL of the stored result ``key`` (for an ``absolute`` link)."""
    return viewer_url(settings, await issue_token(settings, store, key))


def smart_app_context(token: str) -> str:
    """The ``appContext`` (a JSON string) of a CDS Hooks ``smart`` link opening the viewer for ``token``."""
    return json.dumps({"hipcadViewerToken": token, "viewerPath": f"/viewer/{token}"}, separators=(",", ":"))


# Rendering ------------------------------------------------------------------------------------


def radiograph_image(analysis: Analysis) -> tuple[bytes, str]:
    """The radiograph the viewer shows and its MIME type: the stored source-resolution JPEG, else
    (results stored before it was kept) a PNG of the display-size copy."""
    if analysis.radiograph is not None:
        return analysis.radiograph.data, analysis.radiograph.content_type
    return display_png(analysis), "image/png"


def display_png(analysis: Analysis) -> bytes:
    """The display-size radiograph as a grey PNG."""
    return png_bytes(np.ascontiguousarray(analysis.display, dtype=np.uint8))


def radiograph_size(analysis: Analysis) -> tuple[int, int]:
    """(width, height) of :func:`radiograph_image`."""
    if analysis.radiograph is not None:
        return analysis.radiograph.size
    rows, cols = analysis.display.shape[:2]
    return int(cols), int(rows)


def overlay_png(analysis: Analysis, opacity: float = DEFAULT_OPACITY / 100) -> bytes:
    """The radiograph (source resolution when kept) with the heat map blended in and each hip's
    laterality (R/L, "?" when unknown) written on it: ``out/heatmap.png`` in the demo."""
    grey = decode_radiograph(analysis.radiograph) if analysis.radiograph is not None else analysis.display
    rows, cols = grey.shape[:2]
    rgb = overlay(grey, upsample_levels(analysis.heat, rows, cols), opacity)
    return png_bytes(label_hips(rgb, analysis.heatmaps, analysis.image_shape))


def heat_rgba(heat: np.ndarray, floor: float = HEAT_FLOOR) -> np.ndarray:
    """RGBA uint8: colour-mapped heat, alpha rising with the heat value, transparent below ``floor``.

    ``heat``: uint8 levels (what an Analysis holds) or float in [0, 1] (see ``heat_levels``).
    """
    levels = heat_levels(heat)
    values = levels.astype(np.float32) / 255
    rgba = np.empty((*values.shape, 4), dtype=np.uint8)
    rgba[..., :3] = COLORMAP[levels]
    rgba[..., 3] = np.where(values >= floor, np.round(255 * (0.5 + 0.5 * values)), 0).astype(np.uint8)
    return rgba


def heat_png(analysis: Analysis) -> bytes:
    return png_bytes(heat_rgba(analysis.heat))


def _pct(p: float) -> str:
    return percent(p).replace(" ", "\u00a0")  # bounded as on the card; no-break space: "64 %" never wraps


_SIDE_NAMES = {"R": "Right", "L": "Left"}
_SITE_NAMES = {FEMORAL_NECK: "Femoral neck", TROCHANTERIC: "Trochanteric (no Garden stage)"}


_VERDICTS = {
    "critical": "Suspected fracture",
    "warning": "Suspected fracture",
    "low-suspicion": "Low suspicion of a fracture: review the image",
    "none": "No fracture suspected",
}


def _hip_section(index: int, hip: HipFinding, hip_tier: Tier) -> str:
    e = html.escape
    side = _SIDE_NAMES.get(hip.laterality or "", "Side unknown")
    mark = hip.laterality or "?"
    position = "image left" if index == 0 else "image right"
    verdict = _VERDICTS[hip_tier]
    rows = [f"<tr><th scope='row'>Fracture probability</th><td>{_pct(hip.fracture_probability)}</td></tr>"]
    if hip.fractured:
        site = _SITE_NAMES.get(hip.site, "Uncertain: no Garden stage")
        rows.append(f"<tr><th scope='row'>Site</th><td>{e(site)}</td></tr>")
    if hip.garden_applies:  # Garden stages femoral-neck fractures only, conditional on one
        stage = hip.garden_stage
        displacement = "displaced (Garden III–IV)" if hip.displaced else "undisplaced (Garden I–II)"
        garden = ", ".join(f"{s}: {_pct(p)}" for s, p in zip(GARDEN_STAGES, hip.garden_probabilities, strict=True))
        rows += [
            f"<tr><th scope='row'>Garden stage, if a femoral-neck fracture</th>"
            f"<td><strong>{e(stage)}</strong> — {e(displacement)}</td></tr>",
            f"<tr><th scope='row'>P(displaced)</th><td>{_pct(hip.displaced_probability)}</td></tr>",
            f"<tr><th scope='row'>Garden I–IV</th><td>{e(garden)}</td></tr>",
        ]
    css = "hip fractured" if hip.fractured else "hip"
    return (
        f"<section class='{css}' aria-labelledby='hip-{index}'>"
        f"<h2 id='hip-{index}'><span class='mark' aria-hidden='true'>{e(mark)}</span> {e(side)} hip "
        f"<small>({e(position)})</small></h2>"
        f"<p class='verdict'>{e(verdict)}</p><table>{''.join(rows)}</table></section>"
    )


def _side_labels(findings: StudyFindings) -> str:
    """R/L markers in the viewport's top corners (fixed while the image is zoomed: no flip, so the
    image-left corner always shows the same patient side). No midline."""
    labels = []
    for index, hip in enumerate(findings.hips):
        mark = hip.laterality or "?"
        name = f"Patient's {_SIDE_NAMES[hip.laterality].lower()}" if hip.laterality in _SIDE_NAMES else "Side unknown"
        align = "start" if index == 0 else "end"
        labels.append(
            f"<div class='half {align}'><span class='side' role='img' aria-label='{html.escape(name)}' "
            f"title='{html.escape(name)}'>{html.escape(mark)}</span></div>"
        )
    return f"<div class='halves n{len(labels)}'>{''.join(labels)}</div>"


def _study_date(study: StudyIdentity) -> str:
    """DICOM DA ``YYYYMMDD`` (and TM ``HHMMSS…``) as ``YYYY-MM-DD HH:MM``; anything else as written."""
    date, time_ = study.date, study.time
    text = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else date
    if len(time_) >= 4 and time_[:4].isdigit():
        text = f"{text} {time_[:2]}:{time_[2:4]}".strip()
    return text


def study_block(study: StudyIdentity | None) -> str:
    """The study's identification (date, description, accession) as an HTML definition list.

    Patient data: it is rendered on the viewer page only, never logged.
    """
    e = html.escape
    if study is None:
        return "<p class='study' id='study'>Study identification was not kept with this result.</p>"
    items = (
        ("Study date", _study_date(study)),
        ("Description", study.description),
        ("Accession", study.accession),
    )
    rows = "".join(f"<div><dt>{e(name)}</dt><dd>{e(value or '—')}</dd></div>" for name, value in items)
    return f"<dl class='study' id='study' aria-label='Study'>{rows}</dl>"


def _assessment_item(assessment: Assessment) -> str:
    e = html.escape
    when = assessment.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    stamp = f"<time datetime='{e(assessment.timestamp.isoformat())}'>{e(when)}</time>"
    if assessment.outcome == "accepted":
        text = f"Accepted by the clinician at {stamp}"
    else:
        reason = f": {e(assessment.reason_display)}" if assessment.reason_display else " (no reason given)"
        text = f"Overridden{reason}, at {stamp}"
    comment = f" <q>{e(assessment.comment)}</q>" if assessment.comment else ""
    return f"<li class='{e(assessment.outcome)}'>{text}{comment} <small>({e(assessment.indicator)} card)</small></li>"


def assessments_block(found: Sequence[Assessment] | None, token: str) -> str:
    """The clinicians' assessments of this result (CDS Hooks feedback), oldest first, and the FHIR export.

    ``None``: the store could not be read (the page still shows the result).
    """
    if found is None:
        body = "<p>Assessments could not be read just now.</p>"
    elif not found:
        body = "<p>No assessment recorded: the card has not been accepted or overridden in the EHR.</p>"
    else:
        body = f"<ul class='assessments'>{''.join(map(_assessment_item, found))}</ul>"
    export = f"<p class='small'><a href='{html.escape(token)}/assessments'>Assessments as FHIR (JSON)</a></p>"
    return (
        "<section id='assessments' aria-labelledby='assessments-title'>"
        f"<h2 id='assessments-title'>Clinician assessment</h2>{body}{export}</section>"
    )


def _tools() -> str:
    return f"""<div class="tools" role="group" aria-label="Image tools">
<div class="tool" role="group" aria-label="Zoom">
<button type="button" id="zoom-out" aria-label="Zoom out" title="Zoom out (−)">−</button>
<output id="zoom-value" aria-live="polite">Fit</output>
<button type="button" id="zoom-in" aria-label="Zoom in" title="Zoom in (+)">+</button>
<button type="button" id="zoom-fit" title="Fit the image (0)">Fit</button>
<button type="button" id="zoom-actual" title="One image pixel per screen pixel (1)">1:1</button>
</div>
<div class="tool" role="group" aria-label="Window and level">
<label for="window-width">Window</label>
<input type="range" id="window-width" min="2" max="256" step="1" value="{WINDOW_WIDTH}">
<label for="window-level">Level</label>
<input type="range" id="window-level" min="0" max="255" step="1" value="{WINDOW_LEVEL}">
<output id="window-value" aria-live="polite">DICOM window</output>
<button type="button" id="window-reset" title="Back to the DICOM's own window">Reset</button>
</div>
<div class="tool" role="group" aria-label="Heat map">
<label class="toggle" for="toggle"><input type="checkbox" id="toggle" checked> Show heat map</label>
<label for="opacity">Heat-map opacity</label>
<input type="range" id="opacity" min="0" max="100" step="1" value="{DEFAULT_OPACITY}"
 aria-describedby="opacity-value">
<output id="opacity-value" for="opacity">{DEFAULT_OPACITY} %</output>
</div>
</div>
<p class="small hint">Wheel or +/− to zoom, drag or arrow keys to pan, Shift-drag or right-drag to window
(across: width, up/down: level), 0 to fit, H for the heat map.</p>"""


def render_page(analysis: Analysis, token: str, assessed: Sequence[Assessment] | None = ()) -> str:
    """The viewer page (HTML; script and style are separate files under ``static/``); ``assessed``:
    the result's assessments (:func:`assessments_block`)."""
    e = html.escape
    findings = analysis.findings
    cols, rows = radiograph_size(analysis)
    disclaimer = findings.disclaimer or "Research software."
    untrained = (
        "<p><strong>The models are untrained exports: their outputs are meaningless.</strong></p>"
        if findings.untrained
        else ""
    )
    models = "".join(
        f"<li>{e(kind)}: <code>{e(m.label)}</code> ({e(m.architecture)}, training data: {e(m.training_data)})</li>"
        for kind, m in (("Fracture", findings.fracture_model), ("Garden", findings.garden_model))
    )
    notes = "".join(f"<li>{e(note)}</li>" for note in findings.notes)
    sides = ", ".join(
        f"{'image left' if i == 0 else 'image right'} = {_SIDE_NAMES.get(h.laterality or '', 'unknown side').lower()}"
        for i, h in enumerate(findings.hips)
    )
    hips = "".join(_hip_section(i, hip, tier(hip, findings)) for i, hip in enumerate(findings.hips))
    base = e(token)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>Hip fracture AI — heat map (not for clinical use)</title>
<link rel="stylesheet" href="static/viewer.css">
<script src="static/viewer.js" defer></script>
</head>
<body>
<header class="disclaimer" role="alert">
<p><strong>NOT FOR CLINICAL USE.</strong> {e(disclaimer)}</p>{untrained}
</header>
<main>
<div class="viewer">
{study_block(analysis.study)}
{_tools()}
<figure class="viewer-figure">
<div class="viewport" id="viewport" tabindex="0"
 aria-label="Radiograph, {cols} × {rows} pixels: +/− zoom, arrow keys pan, 0 fits">
<div class="stage" id="stage">
<img class="radiograph" id="radiograph" src="{base}/radiograph" width="{cols}" height="{rows}"
 alt="AP pelvis radiograph ({e(sides)})">
<img class="heat" id="heat" src="{base}/heat.png"
 alt="Heat map over the radiograph: warm colours mark where the fracture model found its evidence">
</div>
{_side_labels(findings)}
</div>
<figcaption>Heat map: where the fracture model's evidence lies (class activation map), not the fracture outline.
<span class="legend" aria-hidden="true"><span>low</span><span class="bar"></span><span>high</span></span>
<span class="dims">Radiograph: {cols} × {rows} pixels.</span></figcaption>
</figure>
</div>
<aside class="findings">
<h1>AI findings</h1>
{hips}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
{assessments_block(assessed, base)}
<h2>Models</h2>
<ul class="models">{models}</ul>
<p class="small">Preliminary, AI-generated. Review the images yourself; this does not replace the radiology report.</p>
</aside>
</main>
</body>
</html>
"""


def _message_page(title: str, text: str, action: tuple[str, str] | None = None) -> str:
    """A small HTML page for refusals; ``action`` = (href, label) of one link to offer."""
    link = f"<p><a class='button' href='{html.escape(action[0])}'>{html.escape(action[1])}</a></p>" if action else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><link rel='stylesheet' href='/viewer/static/viewer.css'></head>"
        f"<body class='message'><main><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{link}</main>"
        "</body></html>"
    )


# Router ---------------------------------------------------------------------------------------


def build_router(settings: Settings, store: AsyncStore) -> APIRouter:
    """The viewer's routes; include with ``app.include_router(build_router(settings, store))``."""
    router = APIRouter(tags=["viewer"])
    secret = viewer_secret(settings)
    grace_s = settings.viewer_renew_grace_s
    static = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in _STATIC_TYPES}

    def renewable(token: str) -> bool:
        if grace_s <= 0:
            return False
        try:
            verify_renewable(token, secret, grace_s)
        except InvalidToken:
            return False
        return True

    def refused(exc: InvalidToken, token: str) -> HTMLResponse:
        if isinstance(exc, LinkExpired) and renewable(token):
            page = _message_page(
                "This viewer link has expired",
                "The link on the card is older than its lifetime. You can get a fresh one while the result is kept.",
                (f"/viewer/{token}/renew", "Get a fresh link"),
            )
        elif isinstance(exc, LinkExpired):
            page = _message_page(
                "This viewer link has expired", "Open the card in the EHR again to get a fresh link to the heat map."
            )
        else:
            page = _message_page(
                "This viewer link is not valid", "The link was altered or was not issued by this service."
            )
        return HTMLResponse(page, status_code=403, headers=SECURITY_HEADERS)

    def unavailable(exc: Exception) -> HTMLResponse:
        log.warning("viewer: result store unavailable: %s", type(exc).__name__)
        page = _message_page("The viewer is briefly unavailable", "Please try the link again in a moment.")
        return HTMLResponse(page, status_code=503, headers=SECURITY_HEADERS)

    def gone() -> HTMLResponse:
        page = _message_page(
            "This result is no longer available", "Results are kept for a limited time. Open the card again."
        )
        return HTMLResponse(page, status_code=404, headers=SECURITY_HEADERS)

    async def resolve_link(token: str) -> tuple[str, Analysis] | HTMLResponse:
        """The result id (viewer link) and the result a token opens, or the page saying why not."""
        try:
            result_id = verify(token, secret)
        except InvalidToken as exc:
            return refused(exc, token)
        try:
            analysis = await store.viewer_analysis(result_id)
        except Exception as exc:  # the store is unreachable: say so, never a 500
            return unavailable(exc)
        return gone() if analysis is None else (result_id, analysis)

    async def resolve(token: str) -> Analysis | HTMLResponse:
        found = await resolve_link(token)
        return found if isinstance(found, Response) else found[1]

    async def assessed(result_id: str) -> list[Assessment] | None:
        """The result's assessments; None when the store cannot be read (the caller says so)."""
        try:
            return assessments(await store.assessments(result_id))
        except Exception as exc:
            log.warning("viewer: assessments unavailable: %s", type(exc).__name__)
            return None

    @router.get("/viewer/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in static:
            return Response(status_code=404, headers=SECURITY_HEADERS)
        return Response(static[name], media_type=_STATIC_TYPES[name], headers=SECURITY_HEADERS)

    @router.get("/viewer/{token}", response_class=HTMLResponse, summary="Heat-map viewer page")
    async def page(token: str) -> Response:
        found = await resolve_link(token)
        if isinstance(found, Response):
            return found
        result_id, analysis = found
        html_page = await asyncio.to_thread(render_page, analysis, token, await assessed(result_id))
        return HTMLResponse(html_page, headers=SECURITY_HEADERS)

    @router.get("/viewer/{token}/assessments", summary="The clinicians' assessments of the result (FHIR R4 Bundle)")
    async def assessments_fhir(token: str) -> Response:
        found = await resolve_link(token)
        if isinstance(found, Response):
            return found
        listed = await assessed(found[0])
        if listed is None:
            return unavailable(RuntimeError("assessments"))
        bundle = await asyncio.to_thread(assessment_bundle, listed)
        log.info("viewer: %d assessments exported as FHIR", len(listed))
        return Response(json.dumps(bundle), media_type="application/fhir+json", headers=SECURITY_HEADERS)

    @router.get("/viewer/{token}/radiograph", summary="The radiograph at source resolution (grey JPEG)")
    async def radiograph(token: str) -> Response:
        found = await resolve(token)
        if isinstance(found, Response):
            return found
        data, media_type = await asyncio.to_thread(radiograph_image, found)  # encoding stays off the event loop
        return Response(data, media_type=media_type, headers=SECURITY_HEADERS)

    async def png_response(token: str, render: Callable[[Analysis], bytes]) -> Response:
        """The PNG ``render`` makes of the token's result (encoded off the event loop), or why not."""
        found = await resolve(token)
        if isinstance(found, Response):
            return found
        png = await asyncio.to_thread(render, found)
        return Response(png, media_type="image/png", headers=SECURITY_HEADERS)

    @router.get("/viewer/{token}/radiograph.png", summary="The radiograph at display size (grey PNG)")
    async def radiograph_display(token: str) -> Response:
        return await png_response(token, display_png)

    @router.get("/viewer/{token}/heat.png", summary="The heat layer (RGBA PNG)")
    async def heat(token: str) -> Response:
        return await png_response(token, heat_png)

    @router.get("/viewer/{token}/overlay.png", summary="Radiograph, heat map and R/L labels in one PNG")
    async def overlay_image(token: str) -> Response:
        return await png_response(token, overlay_png)

    @router.get("/viewer/{token}/renew", summary="A fresh link for a genuine one expired within the grace period")
    async def renew(token: str) -> Response:
        try:
            result_id = verify_renewable(token, secret, grace_s) if grace_s > 0 else verify(token, secret)
        except InvalidToken as exc:
            return refused(exc, "")  # never offers another renewal: past the grace, or not genuine
        try:
            analysis = await store.viewer_analysis(result_id)
        except Exception as exc:
            return unavailable(exc)
        if analysis is None:
            return gone()
        fresh = sign(result_id, secret, link_ttl_s(settings))
        return RedirectResponse(f"/viewer/{fresh}", status_code=303, headers=SECURITY_HEADERS)

    return router
