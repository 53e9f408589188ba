"""JWT forgery suite (CDS Hooks 2.0 § Trusting CDS Clients): every forged token is refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt as pyjwt
import pytest

from cds_service.cdshooks.jwt import (
    JwksCache,
    JwtVerifier,
    TrustedIssuer,
    ensure_keypair,
    public_jwks,
    sign_request_jwt,
)
from cds_service.errors import AuthenticationError
from tests.servers.jwks import JwksServer, jwks_server_running

AUD = "http://127.0.0.1:8080/cds-services/hip-fracture-order-select"
ISS = "hipcad-demo-ehr"


#: Where the JWKS server publishes the EHR's keys.
JWKS_PATH = "/jwks.json"


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    with jwks_server_running() as server:
        yield server


@pytest.fixture
def keys(ehr_keys) -> tuple[bytes, bytes]:
    return ehr_keys[0], ehr_keys[1].read_bytes()


@pytest.fixture
def verifier(keys) -> JwtVerifier:
    return JwtVerifier([TrustedIssuer(ISS, public_key_pem=keys[1])])


def claims(**changes) -> dict:
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": f"jti-{time.time_ns()}"}
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def es384(private_key: bytes, payload: dict, **headers) -> str:
    return pyjwt.encode(payload, private_key, algorithm="ES384", headers={"kid": "ehr-key-1", **headers})


async def refused(verifier: JwtVerifier, token: str, match: str | None = None) -> None:
    with pytest.raises(AuthenticationError, match=match):
        await verifier.verify(f"Bearer {token}", AUD)


async def test_a_correctly_signed_token_is_accepted(keys, verifier):
    result = await verifier.verify(f"Bearer {sign_request_jwt(keys[0], ISS, AUD)}", AUD)
    assert result["iss"] == ISS


async def test_alg_none_is_refused(verifier):
    await refused(verifier, pyjwt.encode(claims(), None, algorithm="none"), "algorithm")


async def test_hs256_signed_with_the_public_key_as_secret_is_refused(keys, verifier):
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ehr-key-1"}).encode())
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode())
    import hashlib
    import hmac

    signing_input = header.rstrip(b"=") + b"." + payload.rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(keys[1], signing_input, hashlib.sha256).digest()).rstrip(b"=")
    await refused(verifier, (signing_input + b"." + signature).decode(), "algorithm")


async def test_expired_token_is_refused(keys, verifier):
    now = int(time.time())
    await refused(verifier, es384(keys[0], claims(iat=now - 900, exp=now - 600)))


async def test_token_issued_in_the_future_is_refused(keys, verifier):
    now = int(time.time())
    await refused(verifier, es384(keys[0], claims(iat=now + 600, exp=now + 900)))


async def test_wrong_audience_is_refused(keys, verifier):
    await refused(verifier, es384(keys[0], claims(aud="http://127.0.0.1:8080/cds-services/other")))


@pytest.mark.parametrize("missing", ["iss", "aud", "exp", "iat", "jti"])
async def test_each_required_claim_missing_is_refused(keys, verifier, missing):
    await refused(verifier, es384(keys[0], claims(**{missing: None})))


async def test_missing_kid_is_refused(keys, verifier):
    token = pyjwt.encode(claims(), keys[0], algorithm="ES384")
    await refused(verifier, token, "kid")


async def test_tampered_payload_is_refused(keys, verifier):
    token = es384(keys[0], claims())
    header, _, signature = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(iss=ISS, sub="admin")).encode()).rstrip(b"=").decode()
    await refused(verifier, f"{header}.{forged}.{signature}")


async def test_replayed_jti_is_refused(keys, verifier):
    token = es384(keys[0], claims(jti="once"))
    await verifier.verify(f"Bearer {token}", AUD)
    await refused(verifier, token, "replayed")


async def test_untrusted_issuer_is_refused(keys, verifier):
    await refused(verifier, es384(keys[0], claims(iss="https://evil.example")), "untrusted")


async def test_signature_by_another_key_is_refused(tmp_path: Path, verifier):
    ensure_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    await refused(verifier, es384((tmp_path / "other.pem").read_bytes(), claims()))


async def test_no_bearer_header_is_refused(verifier):
    with pytest.raises(AuthenticationError):
        await verifier.verify(None, AUD)
    with pytest.raises(AuthenticationError):
        await verifier.verify("Basic abc", AUD)


async def test_jwks_issuer_unknown_kid_is_refused_and_rotation_is_followed(keys, jwks_server, tmp_path):
    jwks_server.documents[JWKS_PATH] = public_jwks(keys[1], kid="k1")
    verifier = JwtVerifier([TrustedIssuer(ISS, jwks_url=jwks_server.url(JWKS_PATH))], jwks=JwksCache(min_refresh_s=0))
    await verifier.verify(f"Bearer {es384(keys[0], claims(), kid='k1')}", AUD)
    await refused(verifier, es384(keys[0], claims(), kid="unknown"), "kid")
    # The EHR rotates to a new key: the verifier refetches the JWKS for the new kid.
    ensure_keypair(tmp_path / "new.pem", tmp_path / "new.pub")
    jwks_server.documents[JWKS_PATH] = public_jwks((tmp_path / "new.pub").read_bytes(), kid="k2")
    await verifier.verify(f"Bearer {es384((tmp_path / 'new.pem').read_bytes(), claims(), kid='k2')}", AUD)


async def test_jku_not_allow_listed_is_refused(keys, jwks_server):
    jwks_server.documents[JWKS_PATH] = public_jwks(keys[1], kid="k1")
    url = jwks_server.url(JWKS_PATH)
    verifier = JwtVerifier([TrustedIssuer(ISS, jwks_url=url, jku_allowed=())])
    await refused(verifier, es384(keys[0], claims(), kid="k1", jku=url), "jku")
    allowed = JwtVerifier([TrustedIssuer(ISS, jku_allowed=(url,))])
    await allowed.verify(f"Bearer {es384(keys[0], claims(), kid='k1', jku=url)}", AUD)


async def test_tenant_allow_list(keys):
    verifier = JwtVerifier([TrustedIssuer(ISS, public_key_pem=keys[1], tenants=("hospital-a",))])
    await verifier.verify(f"Bearer {es384(keys[0], claims(tenant='hospital-a'))}", AUD)
    await refused(verifier, es384(keys[0], claims(tenant="hospital-b")), "tenant")


# --- Diagnostics: the 401 stays bare, the logged reason says why in operator terms -------------


async def reason(verifier: JwtVerifier, token: str, audience: str = AUD) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(f"Bearer {token}", audience)
    message = str(caught.value)
    assert token not in message and token.split(".")[2] not in message  # never the token, nor its signature
    return message


async def test_unknown_issuer_is_named(keys, verifier):
    message = await reason(verifier, es384(keys[0], claims(iss="https://ehr.other.example")))
    assert "untrusted JWT issuer 'https://ehr.other.example'" in message and repr(ISS) in message


async def test_audience_mismatch_names_the_expected_and_the_received_url(keys, verifier):
    sent = "http://localhost:8080/cds-services/hip-fracture-order-select"
    message = await reason(verifier, es384(keys[0], claims(aud=sent)))
    assert "audience mismatch" in message and f"expected {AUD!r}" in message and f"received {sent!r}" in message


async def test_expiry_gives_the_times(keys, verifier):
    now = int(time.time())
    message = await reason(verifier, es384(keys[0], claims(iat=now - 900, exp=now - 600)))
    assert "expired" in message and "leeway 30 s" in message


async def test_bad_algorithm_is_named(verifier):
    message = await reason(verifier, pyjwt.encode(claims(), "secret-secret-secret-secret-32b!", algorithm="HS256"))
    assert "algorithm 'HS256' not allowed" in message


async def test_replay_names_the_issuer(keys, verifier):
    token = es384(keys[0], claims(jti="twice"))
    await verifier.verify(f"Bearer {token}", AUD)
    message = await reason(verifier, token)
    assert "replayed" in message and repr(ISS) in message


async def test_unknown_kid_names_the_kid_and_the_jwks_url(keys, jwks_server):
    jwks_server.documents[JWKS_PATH] = public_jwks(keys[1], kid="k1")
    verifier = JwtVerifier([TrustedIssuer(ISS, jwks_url=jwks_server.url(JWKS_PATH))], jwks=JwksCache(min_refresh_s=0))
    message = await reason(verifier, es384(keys[0], claims(), kid="nope"))
    assert "kid 'nope' not found" in message and jwks_server.url(JWKS_PATH) in message and "k1" in message


async def test_unreachable_jwks_names_the_url_and_the_error_class(keys):
    url = "http://127.0.0.1:9/jwks.json"  # discard port: connection refused
    verifier = JwtVerifier([TrustedIssuer(ISS, jwks_url=url)], jwks=JwksCache(timeout_s=1))
    message = await reason(verifier, es384(keys[0], claims()))
    assert "JWKS unreachable" in message and url in message and "ConnectError" in message


async def test_signature_by_another_key_says_so(tmp_path: Path, verifier):
    ensure_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    message = await reason(verifier, es384((tmp_path / "other.pem").read_bytes(), claims()))
    assert "signature does not verify" in message and "ehr-key-1" in message


# --- The CDS Hooks sandbox: its published public key is built in -------------------------------


class NoNetwork(JwksCache):
    """A JWKS cache that records every lookup and never touches the network."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    async def key(self, url: str, kid: str):
        self.calls.append((url, kid))
        raise AuthenticationError(f"JWKS unreachable: {url} (test: no network)")


def sandbox_verifier(jwks: JwksCache) -> JwtVerifier:
    from cds_service.app import trusted_issuers
    from cds_service.settings import Settings

    issuers = trusted_issuers(Settings(dev_trust_cds_hooks_sandbox=True, jwt_public_key_file=Path("/nonexistent")))
    return JwtVerifier(issuers, jwks=jwks)


async def test_the_sandbox_key_is_built_in_and_needs_no_network():
    from cryptography.hazmat.primitives.asymmetric import ec

    from cds_service.cdshooks.jwt import SANDBOX_ISSUER, SANDBOX_JWKS, SANDBOX_PUBLIC_JWK

    jwks = NoNetwork()
    verifier = sandbox_verifier(jwks)
    sandbox = verifier.issuers[SANDBOX_ISSUER]
    assert sandbox.builtin_jwks == (SANDBOX_PUBLIC_JWK,) and "d" not in SANDBOX_PUBLIC_JWK  # public half only
    header = {"alg": "ES384", "kid": SANDBOX_PUBLIC_JWK["kid"], "jku": SANDBOX_JWKS}
    key = await verifier._key(sandbox, header)
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert jwks.calls == []


async def test_a_local_key_claiming_the_sandbox_issuer_is_refused(keys):
    from cds_service.cdshooks.jwt import SANDBOX_ISSUER, SANDBOX_JWKS, SANDBOX_PUBLIC_JWK

    jwks = NoNetwork()
    verifier = sandbox_verifier(jwks)
    kid = SANDBOX_PUBLIC_JWK["kid"]
    token = es384(keys[0], claims(iss=SANDBOX_ISSUER), kid=kid, jku=SANDBOX_JWKS)
    message = await reason(verifier, token)
    assert "signature does not verify" in message and kid in message
    assert jwks.calls == []  # refused with the built-in key, offline
    # Another kid falls back to the sandbox's JWKS URL (here unreachable): still refused.
    await reason(verifier, es384(keys[0], claims(iss=SANDBOX_ISSUER), kid="local"))
    assert jwks.calls == [(SANDBOX_JWKS, "local")]


async def test_a_sandbox_jku_elsewhere_is_refused(keys):
    from cds_service.cdshooks.jwt import SANDBOX_ISSUER, SANDBOX_PUBLIC_JWK

    verifier = sandbox_verifier(NoNetwork())
    token = es384(keys[0], claims(iss=SANDBOX_ISSUER), kid=SANDBOX_PUBLIC_JWK["kid"], jku="https://evil.example/j")
    assert "not allow-listed" in await reason(verifier, token)
