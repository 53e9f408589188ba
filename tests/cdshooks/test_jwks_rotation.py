"""An issuer's keys from its JWKS URL (CDS Hooks 3.0 ballot § Trusting CDS Clients: publish a JWKS URL and
rotate keys), against a real HTTP server on loopback that counts its requests.

Rotation is followed (a new ``kid`` is fetched; a retired key stops working after the set's maximum
age), an unknown issuer's JWKS is never fetched, and neither a flood of made-up ``kid`` values nor a
JWKS server that is down costs more than one request per refresh interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import jwt as pyjwt
import pytest

from cds_service.cdshooks.jwt import JwksCache, JwtVerifier, TrustedIssuer, ensure_keypair, public_jwks
from cds_service.errors import AuthenticationError
from tests.servers.jwks import JwksServer, jwks_server_running

AUD = "http://127.0.0.1:8080/cds-services/hip-fracture-patient-view"
ISS = "https://oracle-health.example/tenant-a"


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with jwks_server_running() as server:
        yield server


@pytest.fixture
def key_pairs(tmp_path: Path) -> dict[str, tuple[bytes, bytes]]:
    """Two EHR signing keys (private PEM, public PEM): before and after the rotation."""
    pairs = {}
    for name in ("old", "new"):
        ensure_keypair(tmp_path / f"{name}.pem", tmp_path / f"{name}.pub")
        pairs[name] = ((tmp_path / f"{name}.pem").read_bytes(), (tmp_path / f"{name}.pub").read_bytes())
    return pairs


def token(private_key: bytes, kid: str, iss: str = ISS, **headers: str) -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": AUD, "iat": now, "exp": now + 300, "jti": f"jti-{time.time_ns()}"}
    return pyjwt.encode(claims, private_key, algorithm="ES384", headers={"kid": kid, **headers})


def verifier_for(url: str, **cache: float) -> JwtVerifier:
    return JwtVerifier([TrustedIssuer(ISS, jwks_url=url)], jwks=JwksCache(**cache))


async def test_a_new_kid_after_rotation_is_accepted_and_the_retired_key_stops_working(jwks_server, key_pairs):
    (old_private, old_public), (new_private, new_public) = key_pairs["old"], key_pairs["new"]
    jwks_server.documents["/jwks"] = public_jwks(old_public, kid="2026-01")
    verifier = verifier_for(jwks_server.url("/jwks"), min_refresh_s=0.2, max_age_s=0.6)
    await verifier.verify(f"Bearer {token(old_private, '2026-01')}", AUD)

    # The EHR rotates: the new key is published beside the old one, then signs with it.
    both = public_jwks(old_public, kid="2026-01")["keys"] + public_jwks(new_public, kid="2026-02")["keys"]
    jwks_server.documents["/jwks"] = {"keys": both}
    await asyncio.sleep(0.25)  # past the refresh interval
    await verifier.verify(f"Bearer {token(new_private, '2026-02')}", AUD)
    assert jwks_server.hits["/jwks"] == 2

    # The old key is retired: once the cached set is older than its maximum age it is no longer accepted.
    jwks_server.documents["/jwks"] = public_jwks(new_public, kid="2026-02")
    await asyncio.sleep(0.65)
    with pytest.raises(AuthenticationError, match="kid '2026-01' not found"):
        await verifier.verify(f"Bearer {token(old_private, '2026-01')}", AUD)
    await verifier.verify(f"Bearer {token(new_private, '2026-02')}", AUD)


async def test_an_unknown_issuers_jwks_is_never_fetched(jwks_server, key_pairs):
    private, public = key_pairs["old"]
    jwks_server.documents["/jwks"] = public_jwks(public, kid="k1")
    jwks_server.documents["/attacker-jwks"] = public_jwks(public, kid="k1")
    verifier = verifier_for(jwks_server.url("/jwks"))
    forged = token(private, "k1", iss="https://attacker.example", jku=jwks_server.url("/attacker-jwks"))
    with pytest.raises(AuthenticationError, match="untrusted JWT issuer"):
        await verifier.verify(f"Bearer {forged}", AUD)
    # A trusted issuer pointing its jku elsewhere is refused before any fetch too.
    elsewhere = token(private, "k1", jku=jwks_server.url("/attacker-jwks"))
    with pytest.raises(AuthenticationError, match="jku"):
        await verifier.verify(f"Bearer {elsewhere}", AUD)
    assert sum(jwks_server.hits.values()) == 0


async def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(jwks_server, key_pairs):
    private, public = key_pairs["old"]
    jwks_server.documents["/jwks"] = public_jwks(public, kid="k1")
    verifier = verifier_for(jwks_server.url("/jwks"), min_refresh_s=60)
    await verifier.verify(f"Bearer {token(private, 'k1')}", AUD)
    assert jwks_server.hits["/jwks"] == 1

    async def attempt(i: int) -> None:
        with pytest.raises(AuthenticationError, match="not found in the JWKS"):
            await verifier.verify(f"Bearer {token(private, f'made-up-{i}')}", AUD)

    await asyncio.gather(*(attempt(i) for i in range(200)))
    assert jwks_server.hits["/jwks"] == 1  # within the interval: the first fetch answers them all
    await verifier.verify(f"Bearer {token(private, 'k1')}", AUD)  # the real key still works


async def test_a_flood_on_a_cold_cache_fetches_once(jwks_server, key_pairs):
    private, public = key_pairs["old"]
    jwks_server.documents["/jwks"] = public_jwks(public, kid="k1")
    verifier = verifier_for(jwks_server.url("/jwks"), min_refresh_s=60)

    async def attempt(i: int) -> None:
        with pytest.raises(AuthenticationError):
            await verifier.verify(f"Bearer {token(private, f'made-up-{i}')}", AUD)

    await asyncio.gather(*(attempt(i) for i in range(100)))
    assert jwks_server.hits["/jwks"] == 1


async def test_a_jwks_server_that_is_down_is_asked_once_per_interval(jwks_server, key_pairs):
    private, _ = key_pairs["old"]
    jwks_server.status = 503
    verifier = verifier_for(jwks_server.url("/jwks"), min_refresh_s=60)
    for _ in range(20):
        with pytest.raises(AuthenticationError):
            await verifier.verify(f"Bearer {token(private, 'k1')}", AUD)
    assert jwks_server.hits["/jwks"] == 1


async def test_keys_held_stay_usable_while_a_refresh_fails(jwks_server, key_pairs):
    private, public = key_pairs["old"]
    jwks_server.documents["/jwks"] = public_jwks(public, kid="k1")
    verifier = verifier_for(jwks_server.url("/jwks"), min_refresh_s=0.1, max_age_s=0.2)
    await verifier.verify(f"Bearer {token(private, 'k1')}", AUD)
    jwks_server.status = 500
    await asyncio.sleep(0.25)  # the set is stale: a refresh is attempted, fails, and the held key is used
    await verifier.verify(f"Bearer {token(private, 'k1')}", AUD)
    assert jwks_server.hits["/jwks"] == 2
