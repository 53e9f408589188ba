"""Checks a CDS Hooks response against the card rules of CDS Hooks 2.0 (§ CDS Service Response).

Used by the tests on every card the service can produce; also handy against a live service.
"""

from __future__ import annotations

from typing import Any

INDICATORS = {"info", "warning", "critical"}
LINK_TYPES = {"absolute", "smart"}
ACTION_TYPES = {"create", "update", "delete"}


def _empties(value: Any, path: str) -> list[str]:
    """Nulls, empty strings, arrays or objects anywhere in the JSON (the spec forbids them)."""
    if value is None:
        return [f"{path}: null"]
    if isinstance(value, str | list | dict) and len(value) == 0:
        return [f"{path}: empty {type(value).__name__}"]
    if isinstance(value, dict):
        return [problem for key, item in value.items() for problem in _empties(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [problem for i, item in enumerate(value) for problem in _empties(item, f"{path}[{i}]")]
    return []


def check_card(card: dict[str, Any], where: str = "card") -> list[str]:
    """Problems with one card (an empty list when it conforms)."""
    problems = _empties(card, where)
    summary = card.get("summary")
    if not isinstance(summary, str) or not 0 < len(summary) < 140:
        problems.append(f"{where}.summary must be a string under 140 characters")
    if card.get("indicator") not in INDICATORS:
        problems.append(f"{where}.indicator must be one of {sorted(INDICATORS)}")
    if not (card.get("source") or {}).get("label"):
        problems.append(f"{where}.source.label is required")
    if not card.get("uuid"):
        problems.append(f"{where}.uuid is missing (needed for feedback)")
    if card.get("suggestions"):
        if card.get("selectionBehavior") not in {"at-most-one", "any"}:
            problems.append(f"{where}.selectionBehavior is required with suggestions")
        for i, suggestion in enumerate(card["suggestions"]):
            if not suggestion.get("label") or not suggestion.get("uuid"):
                problems.append(f"{where}.suggestions[{i}] needs a label and a uuid")
            for j, action in enumerate(suggestion.get("actions") or []):
                if action.get("type") not in ACTION_TYPES or not action.get("description"):
                    problems.append(f"{where}.suggestions[{i}].actions[{j}] needs a type and a description")
    for i, reason in enumerate(card.get("overrideReasons") or []):
        if not all(reason.get(key) for key in ("system", "code", "display")):
            problems.append(f"{where}.overrideReasons[{i}] must be a Coding with system, code and display")
    for i, link in enumerate(card.get("links") or []):
        if link.get("type") not in LINK_TYPES or not link.get("label") or not link.get("url"):
            problems.append(f"{where}.links[{i}] needs a label, a url and type absolute|smart")
    return problems


def check_response(response: dict[str, Any]) -> list[str]:
    """Problems with a whole response body."""
    if not isinstance(response.get("cards"), list):
        return ["cards must be an array"]
    return [problem for i, card in enumerate(response["cards"]) for problem in check_card(card, f"cards[{i}]")]
