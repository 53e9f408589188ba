"""EHR profiles (``HIPCAD_EHR_PROFILE``): the same cards, shaped for what each CDS Client acts on.

The card wording (:mod:`cds_service.cdshooks.cards`) is the same everywhere; a profile changes only
what a given EHR needs around it (CDS Hooks 2.0 § Card Attributes, § Feedback):

``generic``
    CDS Hooks 2.0 as written: the create-DiagnosticReport suggestion, ``selectionBehavior`` from
    ``HIPCAD_SELECTION_BEHAVIOR``, the viewer link as ``HIPCAD_CARD_LINK`` says (default a ``smart`` link
    to ``<base>/smart/launch``, the result in ``appContext``; ``absolute``: the signed viewer URL);
    patient-view starts the analysis and shows a card once a result is stored.
``epic``
    ``selectionBehavior`` ``any`` (the only value Epic accepts); ``source.topic`` coded on every card, so
    that Epic can tie an override to the kind of card and respect it on later calls; **no suggestion**:
    Epic's CDS Hooks create actions are limited to Condition, MedicationRequest and ServiceRequest, and none
    of them fits an unverified AI reading (a Condition would put an unconfirmed fracture on the problem
    list; a ServiceRequest would have the AI place an order), so the report stays reachable through the
    card's SMART link instead; card links only to URLs registered with the EHR, as for ``oracle`` (Epic
    keeps only links to registered apps: even with ``HIPCAD_CARD_LINK=absolute`` the viewer link becomes
    the ``smart`` link); feedback JWTs may carry ``aud`` = the service URL (as Epic signs them) or the
    feedback URL.
``oracle``
    patient-view waits for the analysis within the hook deadline and answers the finding card on the first
    call (Oracle Health calls CDS services on patient-view only); card links only to URLs registered with the
    EHR (``HIPCAD_REGISTERED_LINK_URLS``, default the static SMART launch URL): a per-result viewer link
    becomes a ``smart`` link to the registered URL carrying the result in ``appContext``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from cds_service.cdshooks.cards import SelectionBehavior
from cds_service.cdshooks.models import Card, Coding, Link
from cds_service.settings import Settings
from cds_service.viewer.routes import smart_app_context

ProfileName = Literal["generic", "epic", "oracle"]
CardKind = Literal["finding", "status"]

TOPIC_SYSTEM = "https://hipcad.example.org/fhir/CodeSystem/card-topic"
#: ``source.topic`` of a card with the AI's reading (positive, low suspicion or negative).
FINDING_TOPIC = Coding(system=TOPIC_SYSTEM, code="hip-fracture-ai-finding", display="AI hip fracture reading")
#: ``source.topic`` of a card saying the analysis is in progress or unavailable (overriding it must not
#: silence the finding cards).
STATUS_TOPIC = Coding(system=TOPIC_SYSTEM, code="hip-fracture-ai-status", display="AI hip fracture analysis status")
SMART_LAUNCH_PATH = "/smart/launch"


@dataclass(frozen=True)
class EhrProfile:
    """What one CDS Client needs around the cards.

    Attributes:
        name: ``generic``, ``epic`` or ``oracle``.
        selection_behavior: forced ``selectionBehavior``, or None for ``HIPCAD_SELECTION_BEHAVIOR``.
        topic: set ``source.topic`` on every card.
        suggestions: keep the create-DiagnosticReport suggestion.
        feedback_aud_service_url: accept a feedback JWT whose ``aud`` is the service URL.
        patient_view_waits: patient-view waits (within the deadline) and answers the finding card.
        registered_links_only: links only to registered URLs.
    """

    name: ProfileName
    selection_behavior: SelectionBehavior | None = None
    topic: bool = False
    suggestions: bool = True
    feedback_aud_service_url: bool = False
    patient_view_waits: bool = False
    registered_links_only: bool = False


PROFILES: dict[str, EhrProfile] = {
    "generic": EhrProfile("generic"),
    "epic": EhrProfile(
        "epic",
        selection_behavior="any",
        topic=True,
        suggestions=False,
        feedback_aud_service_url=True,
        registered_links_only=True,
    ),
    "oracle": EhrProfile("oracle", patient_view_waits=True, registered_links_only=True),
}


def profile_for(settings: Settings) -> EhrProfile:
    """The profile ``HIPCAD_EHR_PROFILE`` names."""
    return PROFILES[settings.ehr_profile]


def registered_links(settings: Settings) -> list[str]:
    """The link URLs registered with the EHR: ``HIPCAD_REGISTERED_LINK_URLS``, else the SMART launch URL."""
    return [url.rstrip("/") for url in settings.registered_link_urls] or [settings.base_url() + SMART_LAUNCH_PATH]


def audiences(settings: Settings, path: str) -> str | list[str]:
    """The JWT ``aud`` values accepted for a request to ``path`` (CDS Hooks 2.0: the exact URL invoked).

    Epic signs feedback with ``aud`` = the service URL, not the feedback URL: with the ``epic`` profile a
    feedback request accepts either (never another service's URL).
    """
    url = settings.base_url() + path
    if profile_for(settings).feedback_aud_service_url and path.endswith("/feedback"):
        return [url, url.removesuffix("/feedback")]
    return url


def _bare(url: str) -> str:
    """``url`` without query and fragment, for comparing with the registered URLs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _registered(link: Link, settings: Settings) -> Link | None:
    """``link`` if its URL is registered; a per-result viewer link as a ``smart`` link to the registered
    launch URL (the result in ``appContext``); otherwise None (the EHR would drop it anyway)."""
    allowed = registered_links(settings)
    if _bare(link.url) in allowed:
        return link
    viewer = settings.base_url() + "/viewer/"
    if link.type == "absolute" and link.url.startswith(viewer) and "/" not in link.url[len(viewer) :]:
        launch = next((url for url in allowed if url.endswith(SMART_LAUNCH_PATH)), None)
        if launch is not None:
            token = link.url[len(viewer) :]
            return Link(label=link.label, url=launch, type="smart", appContext=smart_app_context(token))
    return None


def shape_card(card: Card, settings: Settings, kind: CardKind = "finding") -> Card:
    """``card`` as the configured EHR profile wants it (a copy; the card's wording is unchanged)."""
    profile = profile_for(settings)
    update: dict[str, object] = {}
    if profile.topic:
        topic = FINDING_TOPIC if kind == "finding" else STATUS_TOPIC
        update["source"] = card.source.model_copy(update={"topic": topic})
    if not profile.suggestions and card.suggestions:
        update["suggestions"] = None
    if profile.selection_behavior is not None and kind == "finding":
        update["selectionBehavior"] = profile.selection_behavior
    if profile.registered_links_only and card.links:
        links = [kept for link in card.links if (kept := _registered(link, settings)) is not None]
        update["links"] = links or None
    return card.model_copy(update=update) if update else card
