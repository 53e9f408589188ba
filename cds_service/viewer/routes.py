"""The viewer's HTTP routes, its signed links, and the SMART ``appContext``.

    GET /viewer/{token}                 the page (radiograph, heat layer, controls, findings)
    GET /viewer/{token}/radiograph.png  the grey radiograph at display size
    GET /viewer/{token}/heat.png        the heat layer (RGBA: colour map, alpha from the heat value)
    GET /viewer/static/viewer.{js,css}  the page's script and style (no CDN, no inline code)

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
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from cds_service.cdshooks.cards import Tier, percent, tier
from cds_service.domain import FEMORAL_NECK, TROCHANTERIC
from cds_service.explain.heatmap import COLORMAP, heat_levels, png_bytes
from cds_service.findings import GARDEN_STAGES, HipFinding, StudyFindings
from cds_service.settings import Settings
from cds_service.viewer.signing import InvalidToken, LinkExpired, sign, verify

if TYPE_CHECKING:
    from cds_service.domain import Analysis, ResultKey
    from cds_service.store import AsyncStore

log = logging.getLogger(__name__)

#: One random key per process when ``HIPCAD_VIEWER_SECRET`` is empty (links die on restart).
_PROCESS_SECRET = secrets.token_bytes(32)

#: Heat values below this stay transparent (same floor as the report's overlay PNG).
HEAT_FLOOR = 0.2
#: Initial opacity of the heat layer, percent (the report's overlay uses 0.45).
DEFAULT_OPACITY = 45

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


async def issue_token(settings: Settings, store: AsyncStore, key: ResultKey, now: float | None = None) -> str:
    """A signed token for the stored result ``key`` (valid ≤ the link TTL and the result TTL)."""
    ttl_s = min(settings.viewer_link_ttl_s, settings.result_ttl_s)
    result_id = await store.viewer_link(key, ttl_s)
    return sign(result_id, viewer_secret(settings), ttl_s, now=now)


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


def radiograph_png(analysis: Analysis) -> bytes:
    return png_bytes(np.ascontiguousarray(analysis.display, dtype=np.uint8))


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


def render_page(analysis: Analysis, token: str) -> str:
    """The viewer page (HTML; script and style are separate files under ``static/``)."""
    e = html.escape
    findings = analysis.findings
    rows, cols = (int(n) for n in analysis.display.shape[:2])
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
<figure class="viewer-figure">
<div class="stack" id="stack">
<img class="radiograph" id="radiograph" src="{base}/radiograph.png" width="{cols}" height="{rows}"
 alt="AP pelvis radiograph ({e(sides)})">
<img class="heat" id="heat" src="{base}/heat.png" width="{cols}" height="{rows}"
 alt="Heat map over the radiograph: warm colours mark where the fracture model found its evidence">
{_side_labels(findings)}
</div>
<figcaption>Heat map: where the fracture model's evidence lies (class activation map), not the fracture outline.
<span class="legend" aria-hidden="true"><span>low</span><span class="bar"></span><span>high</span></span></figcaption>
</figure>
<div class="controls">
<label class="toggle" for="toggle"><input type="checkbox" id="toggle" checked> Show heat map</label>
<label for="opacity">Heat-map opacity</label>
<input type="range" id="opacity" min="0" max="100" step="1" value="{DEFAULT_OPACITY}"
 aria-describedby="opacity-value">
<output id="opacity-value" for="opacity">{DEFAULT_OPACITY} %</output>
</div>
</div>
<aside class="findings">
<h1>AI findings</h1>
{hips}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<h2>Models</h2>
<ul class="models">{models}</ul>
<p class="small">Preliminary, AI-generated. Review the images yourself; this does not replace the radiology report.</p>
</aside>
</main>
</body>
</html>
"""


def _message_page(title: str, text: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><link rel='stylesheet' href='/viewer/static/viewer.css'></head>"
        f"<body class='message'><main><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></main></body></html>"
    )


# Router ---------------------------------------------------------------------------------------


def build_router(settings: Settings, store: AsyncStore) -> APIRouter:
    """The viewer's routes; include with ``app.include_router(build_router(settings, store))``."""
    router = APIRouter(tags=["viewer"])
    secret = viewer_secret(settings)
    static = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in _STATIC_TYPES}

    def refused(exc: InvalidToken) -> HTMLResponse:
        if isinstance(exc, LinkExpired):
            page = _message_page(
                "This viewer link has expired", "Open the card in the EHR again to get a fresh link to the heat map."
            )
        else:
            page = _message_page(
                "This viewer link is not valid", "The link was altered or was not issued by this service."
            )
        return HTMLResponse(page, status_code=403, headers=SECURITY_HEADERS)

    async def resolve(token: str) -> Analysis | HTMLResponse:
        try:
            result_id = verify(token, secret)
        except InvalidToken as exc:
            return refused(exc)
        try:
            analysis = await store.viewer_analysis(result_id)
        except Exception as exc:  # the store is unreachable: say so, never a 500
            log.warning("viewer: result store unavailable: %s", type(exc).__name__)
            page = _message_page("The viewer is briefly unavailable", "Please try the link again in a moment.")
            return HTMLResponse(page, status_code=503, headers=SECURITY_HEADERS)
        if analysis is None:
            page = _message_page(
                "This result is no longer available", "Results are kept for a limited time. Open the card again."
            )
            return HTMLResponse(page, status_code=404, headers=SECURITY_HEADERS)
        return analysis

    @router.get("/viewer/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in static:
            return Response(status_code=404, headers=SECURITY_HEADERS)
        return Response(static[name], media_type=_STATIC_TYPES[name], headers=SECURITY_HEADERS)

    @router.get("/viewer/{token}", response_class=HTMLResponse, summary="Heat-map viewer page")
    async def page(token: str) -> Response:
        found = await resolve(token)
        if isinstance(found, Response):
            return found
        return HTMLResponse(await asyncio.to_thread(render_page, found, token), headers=SECURITY_HEADERS)

    @router.get("/viewer/{token}/radiograph.png", summary="The radiograph (grey PNG)")
    async def radiograph(token: str) -> Response:
        found = await resolve(token)
        if isinstance(found, Response):
            return found
        png = await asyncio.to_thread(radiograph_png, found)  # PNG encoding stays off the event loop
        return Response(png, media_type="image/png", headers=SECURITY_HEADERS)

    @router.get("/viewer/{token}/heat.png", summary="The heat layer (RGBA PNG)")
    async def heat(token: str) -> Response:
        found = await resolve(token)
        if isinstance(found, Response):
            return found
        png = await asyncio.to_thread(heat_png, found)
        return Response(png, media_type="image/png", headers=SECURITY_HEADERS)

    return router
