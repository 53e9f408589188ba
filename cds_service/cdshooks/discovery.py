"""CDS Service discovery (`GET /cds-services`) from the service definitions in ``hooks/``.

The definitions ship as package data: ``cds_service/hooks`` is a link to the repository's
``hooks/`` folder in a checkout and a real folder in a built wheel, so an installed service finds
them either way. Each definition is announced with ``version``: :data:`CDS_HOOKS_VERSION`, the CDS
Hooks release whose wire format the service speaks (CDS Hooks 3.0 ballot § Discovery: services SHOULD
advertise it; 2.0 clients ignore it). See docs/ehr-integration.md for what changes when 3.0 is final.
"""

from __future__ import annotations

import json
from pathlib import Path

from cds_service.cdshooks.models import ServiceDefinition

HOOKS_DIR = Path(__file__).resolve().parents[1] / "hooks"
#: The CDS Hooks release the service implements (semver): 2.0.1, the errata of 2.0 (no wire change).
CDS_HOOKS_VERSION = "2.0.1"


def load_services(folder: Path = HOOKS_DIR) -> dict[str, ServiceDefinition]:
    """Read every ``hooks/*.json`` service definition, keyed by service id (``version`` added unless set)."""
    services: dict[str, ServiceDefinition] = {}
    for path in sorted(folder.glob("*.json")):
        definition = ServiceDefinition.model_validate({"version": CDS_HOOKS_VERSION, **json.loads(path.read_text())})
        if definition.id in services:
            raise ValueError(f"duplicate CDS service id {definition.id!r} in {path}")
        services[definition.id] = definition
    return services
