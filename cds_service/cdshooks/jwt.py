"""CDS Hooks 2.0 JWT (§ Trusting CDS Clients): verify the EHR's bearer token; sign as an EHR.

Every request carries ``Authorization: Bearer <JWT>`` signed by the CDS Client with an asymmetric
key. Required: header ``alg``/``kid``/``typ: JWT``; claims ``iss``, ``aud`` (the exact URL invoked),
``exp``, ``iat``, ``jti``. Only ES384/RS384 (and ES256/RS256) are accepted: never ``none`` or HMAC.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.errors import AuthenticationError

ALGORITHMS = ("ES384", "RS384", "ES256", "RS256")
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")


@dataclass(frozen=True)
class TrustedIssuer:
    """An EHR we trust: its ``iss`` and its public key."""

    issuer: str
    public_key_pem: bytes


def verify_request_jwt(
    authorization: str | None, audience: str, issuers: list[TrustedIssuer], leeway_s: int = 30
) -> dict:
    """Check the ``Authorization`` header's JWT; return its claims or raise AuthenticationError.

    The reason is kept in the exception for the log; the HTTP answer is a bare 401 whatever it is.
    """
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthenticationError("no bearer token")
    token = authorization.removeprefix("Bearer ").strip()
    try:
        header = pyjwt.get_unverified_header(token)
        unverified = pyjwt.decode(token, options={"verify_signature": False})
    except pyjwt.PyJWTError as exc:
        raise AuthenticationError(f"malformed JWT ({type(exc).__name__})") from exc
    if header.get("alg") not in ALGORITHMS:
        raise AuthenticationError("JWT algorithm not allowed")
    if header.get("typ", "JWT") != "JWT":
        raise AuthenticationError("JWT typ is not JWT")
    issuer = next((item for item in issuers if item.issuer == unverified.get("iss")), None)
    if issuer is None:
        raise AuthenticationError("untrusted JWT issuer")
    try:
        return pyjwt.decode(
            token,
            key=issuer.public_key_pem,
            algorithms=list(ALGORITHMS),
            audience=audience,
            issuer=issuer.issuer,
            leeway=leeway_s,
            options={"require": list(REQUIRED_CLAIMS), "verify_iat": True},
        )
    except pyjwt.PyJWTError as exc:
        raise AuthenticationError(f"JWT rejected ({type(exc).__name__})") from exc


def sign_request_jwt(private_key_pem: bytes, issuer: str, audience: str, kid: str = "ehr-key-1") -> str:
    """Sign a CDS Hooks request JWT as an EHR would (ES384, 5-minute lifetime)."""
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return pyjwt.encode(claims, private_key_pem, algorithm="ES384", headers={"kid": kid, "typ": "JWT"})


def ensure_keypair(private_path: Path, public_path: Path) -> None:
    """Create an EC P-384 key pair (PEM) for the demo EHR if it does not exist yet."""
    if private_path.exists() and public_path.exists():
        return
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
