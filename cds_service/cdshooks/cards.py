"""Cards for the ordering physician (CDS Hooks 2.0 § Card Attributes).

One card per study: the summary names the most important finding in under 140 characters, the
indicator follows its severity (``critical`` displaced fracture, ``warning`` undisplaced or
uncertain, ``info`` none found), the detail gives per-hip probabilities in Markdown, and the
suggestion creates the preliminary DiagnosticReport in the chart.
"""

from __future__ import annotations

from typing import Any, Literal

from cds_service.cdshooks.models import Action, Card, Coding, Indicator, Link, Source, Suggestion
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


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _side(hip: HipFinding) -> str:
    return {"R": "right", "L": "left"}.get(hip.laterality or "", "(side unknown)")


def summary_and_indicator(findings: StudyFindings) -> tuple[str, Indicator]:
    """The card's one line and its severity."""
    prefix = "UNTRAINED model: " if findings.untrained else "AI: "
    fractured = sorted(findings.fractured_hips, key=lambda h: h.fracture_probability, reverse=True)
    if not fractured:
        top = max(findings.hips, key=lambda h: h.fracture_probability)
        return f"{prefix}no hip fracture suspected (highest {_pct(top.fracture_probability)})", "info"
    hip = fractured[0]
    if hip.displaced:
        text = (
            f"possible displaced {_side(hip)} femoral neck fracture (Garden III–IV), {_pct(hip.fracture_probability)}"
        )
        indicator: Indicator = "critical"
    else:
        probability = _pct(hip.fracture_probability)
        text = f"possible {_side(hip)} hip fracture, undisplaced if femoral neck (Garden I–II), {probability}"
        indicator = "warning"
    if len(fractured) > 1:
        text += "; also other side"
    summary = prefix + text
    return (summary if len(summary) < 140 else summary[:136] + "…"), indicator


def detail_markdown(findings: StudyFindings) -> str:
    """Per-hip figures, the operating point, what the heat map means, and the disclaimer."""
    lines = ["| Hip | Fracture | Garden I / II / III / IV | Displaced (III–IV) |", "|---|---|---|---|"]
    for hip in findings.hips:
        garden = " / ".join(_pct(p) for p in hip.garden_probabilities) if hip.fractured else "–"
        displaced = _pct(hip.displaced_probability) if hip.fractured else "–"
        lines.append(f"| {_side(hip)} | {_pct(hip.fracture_probability)} | {garden} | {displaced} |")
    model = findings.fracture_model
    if model.sensitivity is not None and model.specificity is not None:
        lines.append(
            f"\nOperating point: fracture called at ≥ {_pct(model.operating_threshold)} "
            f"(validation sensitivity {_pct(model.sensitivity)}, specificity {_pct(model.specificity)})."
        )
    lines.append(
        "\nThe heat map shows where the model looked (class activation map); it marks a rough area, "
        "not the fracture line. Garden staging applies to femoral-neck fractures only."
    )
    if any(hip.laterality is None for hip in findings.hips):
        lines.append("\n**Laterality could not be read from the image header: sides are not named.**")
    lines.extend(f"\n{note}" for note in findings.notes)
    lines.append(f"\nModels: {findings.fracture_model.label}, {findings.garden_model.label}.")
    if findings.disclaimer:
        lines.append(f"\n**{findings.disclaimer}**")
    return "\n".join(lines)


#: Appended to the detail when the result was also stored beside the images (HIPCAD_STORE_RESULTS).
IN_PACS = (
    "\n\nThe result is also in the PACS beside the images: a DICOM structured report and the heat map as "
    "an image (unverified until a radiologist reviews it)."
)


def finding_card(
    findings: StudyFindings,
    report: dict[str, Any],
    base_url: str,
    viewer_url: str | None = None,
    selection_behavior: SelectionBehavior = "at-most-one",
    in_pacs: bool = False,
) -> Card:
    """The card for an analysed study, with the create-DiagnosticReport suggestion.

    ``selection_behavior`` is the card's ``selectionBehavior`` (``settings.selection_behavior``:
    "at-most-one", or "any" for EHRs that want it). ``report`` is embedded once, as the create
    action's resource; it carries the chart-sized heat map, the full resolution is behind
    ``viewer_url``.
    """
    if selection_behavior not in ("at-most-one", "any"):
        raise ValueError(f"selectionBehavior {selection_behavior!r} is not 'at-most-one' or 'any'")
    summary, indicator = summary_and_indicator(findings)
    links = [Link(label="View heat map", url=viewer_url, type="absolute")] if viewer_url else None
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
                    )
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


def unavailable_card(reason: str, base_url: str) -> Card:
    """The one card for "no analysis this time", whatever failed (models, image store, a bug: reason
    "internal error"). ``reason`` is shown to the clinician: it must not carry patient data."""
    return problem_card(
        UNAVAILABLE_SUMMARY,
        f"The study could not be analysed: {reason}. Please review the images directly.",
        base_url,
    )
