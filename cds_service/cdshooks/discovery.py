"""CDS Service discovery (`GET /cds-services`) from the service definitions in ``hooks/``.

The definitions ship as package data: ``cds_service/hooks`` is a link to the repository's
``hooks/`` folder in a checkout and a real folder in a built wheel, so an installed service finds
them either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from cds_service.cdshooks.models import ServiceDefinition

HOOKS_DIR = Path(__file__).resolve().parents[1] / "hooks"


def load_services(folder: Path = HOOKS_DIR) -> dict[str, ServiceDefinition]:
    """Read every ``hooks/*.json`` service definition, keyed by service id."""
    services: dict[str, ServiceDefinition] = {}
    for path in sorted(folder.glob("*.json")):
        definition = ServiceDefinition.model_validate(json.loads(path.read_text()))
        if definition.id in services:
            raise ValueError(f"duplicate CDS service id {definition.id!r} in {path}")
        services[definition.id] = definition
    return services
