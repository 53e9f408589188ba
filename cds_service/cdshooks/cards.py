"""Cards for the ordering physician (CDS Hooks 2.0 § Card Attributes).

One card per study: the summary names the most important finding in under 140 characters, the
indicator follows its :func:`tier` from the calibrated probability and the fracture model's two stored
operating points (``critical`` a displaced femoral-neck fracture above the high-specificity point,
``warning`` any other fracture above it, ``info`` a low suspicion between the two points or none
found), the detail gives per-hip probabilities in Markdown (Garden only for a femoral-neck fracture),
and the suggestion creates the preliminary DiagnosticReport in the chart. A failure card names a short
reason code and what the clinician can do (:func:`unavailable_card`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from cds_service.cdshooks.models import Action, Card, Coding, Indicator, Link, Source, Suggestion
from cds_service.domain import FEMORAL_NECK, TROCHANTERIC, ModelInfo
from cds_service.findings import HipFinding, StudyFindings

SelectionBehavior = Literal["at-most-one", "any"]
OVERRIDE_SYSTEM = "https://hipcad.example.org/fhir/CodeSystem/override-reason"
OVERRIDE_REASONS = [
    Coding(system=OVERRIDE_SYSTEM, code="disagree", display="Disagree with the AI finding"),
    Coding(system=OVERRIDE_SYSTEM, code="reviewed-by-radiology", display="Already reviewed by radiology"),
    Coding(system=OVERRIDE_SYSTEM, code="poor-image-quality", display="Poor image quality"),
    Coding(system=OVERRIDE_SYSTEM, code="not-relevant", display="Not clinically relevant"),
]


def source(base_url: str) -> Source:
    return Source(label="hipcad hip-fracture AI (synthetic-trained, not for clinical use)")


def percent(value: float) -> str:
    """A probability as a bounded percentage: "> 99 %" and "< 1 %", never "100 %" or "0 %" (a model's
    probability is never a certainty)."""
    percent = round(100 * value)
    if percent >= 100:
        return "> 99 %"
    if percent <= 0:
        return "< 1 %"
    return f"{percent} %"


def _p(value: float) -> str:
    """``p ≈ 6 %``, ``p > 99 %``, ``p < 1 %``: the probability as the summary shows it."""
    text = percent(value)
    return f"p {text}" if text[0] in "<>" else f"p ≈ {text}"


def _side(hip: HipFinding) -> str:
    return {"R": "right", "L": "left"}.get(hip.laterality or "", "(side unknown)")


#: How strongly the card raises one hip, most severe first (see :func:`tier`).
Tier = Literal["critical", "warning", "low-suspicion", "none"]
_TIERS: tuple[Tier, ...] = ("critical", "warning", "low-suspicion", "none")


def calibrated(model: ModelInfo) -> bool:
    """Whether ``model``'s probabilities may raise a ``critical`` card: trained, with a stored calibration.

    Calibration (temperature scaling, Guo et al. 2017; the prior shift, :func:`cds_service.domain.prior_shift`)
    is stored as a temperature other than 1 or a ``calibration_prevalence``. An export with neither (the
    untrained default, ``temperature`` 1.000000) cannot be told from an uncalibrated one, so it counts as
    uncalibrated: its percentages are raw softmax outputs, not frequencies.
    """
    return not model.untrained and (model.temperature != 1.0 or model.calibration_prevalence is not None)


def tier(hip: HipFinding, findings: StudyFindings) -> Tier:
    """How the card raises ``hip``, from its calibrated probability and the two stored operating points.

    * ``critical``: a displaced femoral-neck fracture (:attr:`HipFinding.garden_applies`, Garden III–IV)
      at or above the high-specificity point, both models :func:`calibrated`;
    * ``warning``: any other fracture at or above the high-specificity point; and, for a model that stores
      no high-specificity point (:func:`cds_service.inference.client.high_specificity_threshold`), any
      fracture at or above the operating point (never ``critical`` then);
    * ``low-suspicion``: at or above the operating (high-sensitivity) point but below the high-specificity
      one: an ``info`` card worded as suspicion, which a site can switch off (``HIPCAD_LOW_SUSPICION_CARDS``);
    * ``none``: below the operating point.
    """
    if not hip.fractured:
        return "none"
    high = findings.fracture_model.high_specificity_point
    if high is None:
        return "warning"
    if hip.fracture_probability < high:
        return "low-suspicion"
    trusted = calibrated(findings.fracture_model) and calibrated(findings.garden_model)
    return "critical" if hip.garden_applies and hip.displaced and trusted else "warning"


def _ranked(findings: StudyFindings) -> list[tuple[Tier, HipFinding]]:
    """Hips with their tiers, the most severe first (then the most probable)."""
    tiers = [(tier(hip, findings), hip) for hip in findings.hips]
    return sorted(tiers, key=lambda item: (_TIERS.index(item[0]), -item[1].fracture_probability))


def _suspected(hip: HipFinding) -> str:
    """The fracture as the summary names it: site, and a Garden group only for a femoral-neck fracture."""
    side = _side(hip)
    if hip.garden_applies:
        if hip.displaced:
            return f"suspected displaced {side} femoral neck fracture (Garden III–IV)"
        return f"suspected undisplaced {side} femoral neck fracture (Garden I–II)"
    if hip.site == TROCHANTERIC:
        return f"suspected {side} trochanteric fracture"
    return f"suspected {side} hip fracture, site uncertain"


def summary_and_indicator(findings: StudyFindings) -> tuple[str, Indicator]:
    """The card's one line (< 140 characters) and its indicator (CDS Hooks 2.0 § Card Attributes).

    The indicator follows the most severe hip's :func:`tier`; a low suspicion is ``info`` and worded as
    a suspicion with its probability, never as a finding.
    """
    prefix = "UNTRAINED model: " if findings.untrained else "AI: "
    ranked = _ranked(findings)
    top_tier, hip = ranked[0]
    if top_tier == "none":
        highest = max(h.fracture_probability for h in findings.hips)
        return f"{prefix}no hip fracture suspected (highest {_p(highest)})", "info"
    if top_tier == "low-suspicion":
        text = f"low suspicion of a {_side(hip)} hip fracture ({_p(hip.fracture_probability)}) — review the image"
        indicator: Indicator = "info"
    else:
        text = f"{_suspected(hip)}, {_p(hip.fracture_probability)}"
        indicator = "critical" if top_tier == "critical" else "warning"
    others = [t for t, _ in ranked[1:] if t != "none"]
    if others:
        low_only = top_tier != "low-suspicion" and set(others) == {"low-suspicion"}
        text += "; other side: low suspicion" if low_only else "; also other side"
    summary = prefix + text
    return (summary if len(summary) < 140 else summary[:136] + "…"), indicator


def card_shown(findings: StudyFindings, negative_card: bool = True, low_suspicion_cards: bool = True) -> bool:
    """Whether the study gets a finding card at all.

    ``negative_card`` (``HIPCAD_NEGATIVE_CARD``) shows the "no hip fracture suspected" card;
    ``low_suspicion_cards`` (``HIPCAD_LOW_SUSPICION_CARDS``) the low-suspicion ``info`` card. With it
    off, a study whose most severe hip is a low suspicion gets no card (not a "no fracture" card: the
    hip is above the operating point).
    """
    top_tier = _ranked(findings)[0][0]
    if top_tier == "none":
        return negative_card
    return low_suspicion_cards or top_tier != "low-suspicion"


_CALLS: dict[Tier, str] = {
    "critical": "suspected fracture",
    "warning": "suspected fracture",
    "low-suspicion": "low suspicion",
    "none": "not suspected",
}
_SITES = {FEMORAL_NECK: "femoral neck", TROCHANTERIC: "trochanteric (no Garden stage)"}


def _row(hip: HipFinding, hip_tier: Tier) -> str:
    site = "–" if not hip.fractured or hip.low_suspicion else _SITES.get(hip.site, "uncertain (no Garden stage)")
    garden = "–"
    if hip.garden_applies:
        stages = " / ".join(percent(p) for p in hip.garden_probabilities)
        garden = f"{stages} (displaced {percent(hip.displaced_probability)})"
    return f"| {_side(hip)} | {percent(hip.fracture_probability)} | {_CALLS[hip_tier]} | {site} | {garden} |"


def _operating_points(model: ModelInfo) -> str:
    validation = (
        f" (validation sensitivity {percent(model.sensitivity)}, specificity {percent(model.specificity)})"
        if model.sensitivity is not None and model.specificity is not None
        else ""
    )
    text = f"\nOperating point: fracture suspected at p ≥ {100 * model.operating_threshold:.1f} %{validation}."
    high = model.high_specificity_point
    if high is None:
        return text + (
            " This model stores no high-specificity operating point, so a hip above the operating point is "
            "shown as a `warning`, never `critical`."
        )
    return text + (
        f" A `warning` or `critical` card only at p ≥ {100 * high:.1f} % (the high-specificity operating point); "
        "between the two, a low-suspicion `info` card."
    )


def detail_markdown(findings: StudyFindings) -> str:
    """Per-hip figures, the operating points, what the heat map means, and the disclaimer.

    Garden percentages appear only for a femoral-neck fracture (:attr:`HipFinding.garden_applies`),
    labelled as conditional on one; a fracture whose site is uncertain is said to be so, with no stage.
    """
    lines = [
        "| Hip | Fracture probability | AI | Site | Garden I / II / III / IV, if a femoral-neck fracture |",
        "|---|---|---|---|---|",
    ]
    lines += [_row(hip, tier(hip, findings)) for hip in findings.hips]
    fractured = findings.fractured_hips
    if any(hip.site not in _SITES and not hip.low_suspicion for hip in fractured):
        lines.append(
            "\nThe fracture site (femoral neck or trochanteric) is uncertain: no Garden stage is given. "
            "Garden staging applies to femoral-neck fractures only."
        )
    if any(hip.garden_applies for hip in fractured):
        lines.append("\nGarden percentages are conditional: they hold if the fracture is a femoral-neck fracture.")
    if any(hip.low_suspicion for hip in fractured):
        lines.append("\nA low suspicion names no fracture site and no Garden stage: review the image.")
    lines.append(_operating_points(findings.fracture_model))
    if not (calibrated(findings.fracture_model) and calibrated(findings.garden_model)):
        lines.append(
            "\nThe models' probabilities are not calibrated (untrained, or no calibration stored with them): "
            "this card is never `critical`."
        )
    lines.append(
        "\nThe heat map shows where the model looked (class activation map); it marks a rough area, "
        "not the fracture line."
    )
    if any(hip.laterality is None for hip in findings.hips):
        lines.append("\n**Laterality could not be read from the image header: sides are not named.**")
    lines.extend(f"\n{note}" for note in findings.notes)
    lines.append(f"\nModels: {findings.fracture_model.label}, {findings.garden_model.label}.")
    if findings.disclaimer:
        lines.append(f"\n**{findings.disclaimer}**")
    return "\n".join(lines)


#: Appended to the detail when the result was STOWed to a PACS beside the images (HIPCAD_STORE_RESULTS):
#: see :func:`stored_in_pacs`.
IN_PACS = (
    "\n\nThe result is also in the PACS beside the images: a DICOM structured report and the heat map as "
    "an image (unverified until a radiologist reviews it)."
)


def stored_in_pacs(urls: Sequence[str]) -> bool:
    """Whether the results went to a PACS: a WADO-RS URL over HTTP(S) among ``urls``
    (:attr:`cds_service.domain.Analysis.stored_in_pacs`). A local folder store's ``file:`` URLs are no PACS."""
    return any(urlsplit(url).scheme.lower() in ("http", "https") for url in urls)


def viewer_card_link(viewer_url: str, base_url: str, link_type: Literal["smart", "absolute"]) -> Link:
    """The card's link to the heat map (``HIPCAD_CARD_LINK``).

    ``smart`` (the default): a link to the static SMART launch URL ``<base>/smart/launch`` carrying the
    viewer token in ``appContext`` (CDS Hooks 2.0 § Link: the EHR launches the app and passes
    ``appContext`` through the token response, SMART App Launch 2.0 § App Launch); one URL the EHR can
    register, as EHRs that keep only registered apps' links require. ``absolute`` (the fallback, for a
    CDS client that cannot launch SMART apps): the signed, short-lived viewer URL itself.
    """
    if link_type == "absolute":
        return Link(label="View heat map", url=viewer_url, type="absolute")
    from cds_service.viewer.routes import smart_app_context  # the viewer imports this module

    token = viewer_url.rsplit("/", 1)[-1]
    return Link(
        label="View heat map", url=f"{base_url}/smart/launch", type="smart", appContext=smart_app_context(token)
    )


def finding_card(
    findings: StudyFindings,
    report: dict[str, Any],
    base_url: str,
    viewer_url: str | None = None,
    selection_behavior: SelectionBehavior = "at-most-one",
    in_pacs: bool = False,
    provenance: dict[str, Any] | None = None,
    link_type: Literal["smart", "absolute"] = "smart",
) -> Card:
    """The card for an analysed study, with the create-DiagnosticReport suggestion.

    ``provenance`` (:func:`cds_service.fhir.provenance.provenance_json` of ``report``) is created by
    the same suggestion, after the report it targets.

    ``selection_behavior`` is the card's ``selectionBehavior`` (``settings.selection_behavior``:
    "at-most-one", or "any" for EHRs that want it). ``report`` is embedded once, as the create
    action's resource; it carries the chart-sized heat map, the full resolution is behind
    ``viewer_url``. ``in_pacs``: the results were STOWed to a PACS (:func:`stored_in_pacs`), not a folder.
    ``link_type``: how the card links to ``viewer_url`` (``settings.card_link``, :func:`viewer_card_link`).
    """
    if selection_behavior not in ("at-most-one", "any"):
        raise ValueError(f"selectionBehavior {selection_behavior!r} is not 'at-most-one' or 'any'")
    summary, indicator = summary_and_indicator(findings)
    links = [viewer_card_link(viewer_url, base_url, link_type)] if viewer_url else None
    return Card(
        summary=summary,
        detail=detail_markdown(findings) + (IN_PACS if in_pacs else ""),
        indicator=indicator,
        source=source(base_url),
        suggestions=[
            Suggestion(
                label="Add the preliminary AI report to the chart",
                isRecommended=False,
                actions=[
                    Action(
                        type="create",
                        description="Create a preliminary DiagnosticReport (AI) with the heat map",
                        resource=report,
                    ),
                    *(
                        [
                            Action(
                                type="create",
                                description="Record the AI as the report's author (Provenance)",
                                resource=provenance,
                            )
                        ]
                        if provenance
                        else []
                    ),
                ],
            )
        ],
        selectionBehavior=selection_behavior,
        overrideReasons=OVERRIDE_REASONS,
        links=links,
    )


def problem_card(summary: str, detail: str, base_url: str) -> Card:
    """An honest ``info`` card when the study could not be analysed."""
    return Card(summary=summary[:139], detail=detail, indicator="info", source=source(base_url))


UNAVAILABLE_SUMMARY = "AI hip fracture analysis unavailable for the latest hip radiograph"

#: The failure card's short reason codes (:attr:`cds_service.errors.CdsServiceError.reason_code`) and what
#: each means to a clinician. The full reason (hosts, ports, exception text) goes to the log only.
UNAVAILABLE_REASONS = {
    "models-unavailable": "the AI models could not be reached",
    "images-unavailable": "the radiograph could not be retrieved from the image archive",
    "image-not-analysable": "the image is not one the AI can read (for example not a grey-scale hip or pelvis "
    "radiograph)",
    "image-store-not-allowed": "the radiograph is in an image archive this service is not configured to use",
    "internal-error": "an internal error stopped the analysis",
}


def unavailable_card(reason_code: str, base_url: str) -> Card:
    """The one card for "no analysis this time", whatever failed, with what the clinician can do.

    ``reason_code`` is a key of :data:`UNAVAILABLE_REASONS` ("internal error" is read as
    ``internal-error``); anything else is shown as ``internal-error``, so free text (a host, a port, an
    exception message) never reaches the card.
    """
    code = reason_code.strip().lower().replace(" ", "-")
    if code not in UNAVAILABLE_REASONS:
        code = "internal-error"
    return problem_card(
        UNAVAILABLE_SUMMARY,
        f"No AI result this time: {UNAVAILABLE_REASONS[code]}. Review the images yourself as usual; the order "
        f"does not depend on the AI. The AI may answer when the order is reopened or signed. If this keeps "
        f"happening, tell IT support the reason code `{code}` and the time.",
        base_url,
    )
