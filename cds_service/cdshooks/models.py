"""CDS Hooks 2.0 wire models (https://cds-hooks.hl7.org/2.0/): requests, cards, responses.

Field names are the specification's own (``hookInstance``, ``fhirAuthorization``,
``selectionBehavior``…) so a reader can look each one up. Responses are serialised with
:func:`to_json` which drops ``None`` values: the spec forbids nulls in card JSON.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

Indicator = Literal["info", "warning", "critical"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FhirAuthorization(_Model):
    """`fhirAuthorization`: an OAuth 2.0 access token for `fhirServer` (§ Passing the Access Token)."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None

    def __repr__(self) -> str:  # the token must never reach a log line
        return f"FhirAuthorization(subject={self.subject!r}, scope=..., access_token=<redacted>)"

    __str__ = __repr__


class HookRequest(_Model):
    """An HTTP POST body sent by the CDS Client to a CDS Service (§ HTTP Request)."""

    hook: str
    hookInstance: str
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    #: The hook's typed context (``cds_service.cdshooks.requests``), set once the context is validated;
    #: ``context`` stays the plain dict the pipeline reads.
    _typed_context: BaseModel | None = PrivateAttr(default=None)

    @property
    def typed_context(self) -> BaseModel | None:
        return self._typed_context

    @typed_context.setter
    def typed_context(self, value: BaseModel | None) -> None:
        self._typed_context = value

    @field_validator("hook", "hookInstance")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class Coding(_Model):
    """A FHIR Coding, as used by a card's `overrideReasons` (display is required there)."""

    code: str
    system: str
    display: str


class FeedbackCoding(_Model):
    """The Coding a CDS Client sends back in feedback `overrideReason.reason`: code and system
    required, `display` optional (the CDS Hooks sandbox sends only `system` and `code`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=True)

    code: str
    system: str
    display: str | None = None


class Source(_Model):
    """`source`: who produced the card (label required)."""

    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Model):
    """A suggestion `action`: create, update or delete a FHIR resource."""

    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: list[str] | None = None


class Suggestion(_Model):
    """A card `suggestion` with its actions."""

    label: str
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(_Model):
    """A card `link`: `absolute` (a web page) or `smart` (a SMART app launch)."""

    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(_Model):
    """A CDS Hooks card (§ Card Attributes)."""

    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    summary: str = Field(max_length=139)
    detail: str | None = None
    indicator: Indicator
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None


class CdsResponse(_Model):
    """The CDS Service's answer: zero or more cards."""

    cards: list[Card] = Field(default_factory=list)


class ServiceDefinition(_Model):
    """One entry of the discovery response (§ Discovery).

    ``version`` (the CDS Hooks version the service speaks, semver) and ``hookVersion`` (the version of
    the hook definition it was built for, from the hook's own page) are the CDS Hooks 3.0 ballot's
    additions; a 2.0 client ignores them.
    """

    hook: str
    hookVersion: str | None = None
    id: str
    title: str | None = None
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None
    version: str | None = None


def to_json(model: BaseModel) -> dict[str, Any]:
    """Serialise without nulls (the spec forbids them in responses)."""
    return model.model_dump(mode="json", exclude_none=True)
