"""CORS for browser-side EHRs (the CDS Hooks sandbox): the Private Network Access preflight Chromium sends
before a public page (``https://sandbox.cds-hooks.org``) may call a service on ``localhost`` or a private
network (WICG Private Network Access, §3.2 "CORS preflight": ``Access-Control-Request-Private-Network``
answered by ``Access-Control-Allow-Private-Network: true``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cds_service.settings import Settings
from tests.conftest import app_clients

SANDBOX = "https://sandbox.cds-hooks.org"


@pytest.fixture
def client(service_settings: Settings) -> Iterator[TestClient]:
    """The app (no Triton needed for a preflight) allowing the public sandbox's origin."""
    with app_clients(lambda: service_settings.model_copy(update={"cors_allow_origins": [SANDBOX]})) as make:
        yield make()


def preflight(client: TestClient, origin: str, path: str = "/cds-services/hip-fracture-order-select") -> dict:
    response = client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    return {"status": response.status_code, **{k.lower(): v for k, v in response.headers.items()}}


def test_a_private_network_preflight_from_an_allowed_origin_is_answered(client: TestClient) -> None:
    for path in ("/cds-services", "/cds-services/hip-fracture-order-select", "/cds-services/x/feedback"):
        answer = preflight(client, SANDBOX, path)
        assert answer["status"] == 200, answer
        assert answer["access-control-allow-origin"] == SANDBOX
        assert answer["access-control-allow-private-network"] == "true"
        assert "authorization" in answer["access-control-allow-headers"].lower()


def test_a_private_network_preflight_from_another_origin_is_refused(client: TestClient) -> None:
    answer = preflight(client, "https://evil.example")
    assert answer["status"] == 400
    assert "access-control-allow-origin" not in answer  # without it the browser refuses, whatever else is sent


def test_without_an_allowed_origin_there_is_no_cors_at_all(service_settings: Settings) -> None:
    with app_clients(lambda: service_settings) as make:
        answer = preflight(make(), SANDBOX)
    assert "access-control-allow-origin" not in answer and "access-control-allow-private-network" not in answer
