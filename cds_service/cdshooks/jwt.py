"""CDS Hooks 2.0 JWT (§ Trusting CDS Clients): verify the EHR's bearer token; sign as an EHR.

Every request carries ``Authorization: Bearer <JWT>`` signed by the CDS Client with an asymmetric
key. Required: header ``alg`` and ``kid`` (``typ`` JWT when present); claims ``iss``, ``aud`` (the
exact URL invoked), ``exp``, ``iat``, ``jti``. Only ES384/RS384 (and ES256/RS256) are accepted:
never ``none`` or HMAC, whatever the header says. Keys come from the issuer's configured JWKS URL
(or a static PEM), or from the header's ``jku`` only when that URL is allow-listed for the issuer;
JWKS are cached by ``kid`` and refetched when an unknown ``kid`` shows up or the set is older than its
maximum age, at most once per refresh interval per URL (a flood of made-up ``kid`` values costs one fetch),
so key rotation works (CDS Hooks 3.0 ballot: clients SHOULD publish a JWKS URL and rotate keys). An
unknown issuer is refused before any key is looked up, so its JWKS is never fetched. A ``jti`` replay
cache refuses a token seen before, across replicas through the shared store; when that store cannot
be reached, ``strict`` (``HIPCAD_JTI_STRICT``, the default) refuses the token. Every failure is an
:class:`AuthenticationError`; the web layer answers a bare 401 and logs only the reason. The reason is
written for the operator who has to fix the set-up (which issuer, which expected and received
``aud``, which JWKS URL and error, which ``kid``, when it expired); it never contains the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.errors import AuthenticationError
from cds_service.metrics import AUTH_FAILURES
from cds_service.telemetry import tracer

log = logging.getLogger(__name__)

ALGORITHMS = ("ES384", "RS384", "ES256", "RS256")
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")
#: The public CDS Hooks sandbox signs with a key whose private half is published: development only.
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JWKS = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
#: The sandbox's PUBLIC signing key, built in so the development switch needs no internet access.
#: Source: github.com/cds-hooks/sandbox, file ``.well-known/jwks.json`` (served at SANDBOX_JWKS); the
#: sandbox's ``src/retrieve-data-helpers/jwt-generator.js`` signs with ``alg`` ES384 and this ``kid``
#: (and sends ``jku`` SANDBOX_JWKS). Older sandbox builds used an ES256 key (kid d9cd3c4f-…): not
#: built in; a token with another ``kid`` falls back to fetching SANDBOX_JWKS.
SANDBOX_PUBLIC_JWK: dict[str, str] = {
    "kty": "EC",
    "use": "sig",
    "crv": "P-384",
    "kid": "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
    "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
    "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
    "alg": "ES384",
}


def _show(value: Any, limit: int = 120) -> str:
    """A header/claim value for a log line: repr'd (no log injection), truncated, never the token."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return _show(epoch)


@dataclass(frozen=True)
class TrustedIssuer:
    """An EHR we trust: its ``iss`` and where its keys come from.

    Attributes:
        issuer: the exact ``iss`` value.
        public_key_pem: a static key (PEM), or None when keys come from JWKS.
        jwks_url: the issuer's JWKS URL (configured, trusted).
        jku_allowed: ``jku`` header URLs this issuer may point to.
        tenants: when set, the ``tenant`` claim must be one of these.
        builtin_jwks: public JWKs known in advance (the sandbox's): a token whose ``kid`` is one of
            them is verified with it, without any network access.
    """

    issuer: str
    public_key_pem: bytes | None = None
    jwks_url: str | None = None
    jku_allowed: tuple[str, ...] = ()
    tenants: tuple[str, ...] | None = None
    builtin_jwks: tuple[dict[str, str], ...] = field(default=(), hash=False)


@dataclass
class ReplayCache:
    """Remembers (iss, jti) until the token expires; thread-safe. In memory (one process) unless
    ``remember`` is given: then the shared store keeps them (``SqlStore.remember_jti``), so a token
    used on one replica is refused on every other.

    When the store cannot be reached, this process's memory still refuses the replays it has seen;
    a replay presented to *another* replica cannot be seen. ``strict`` (``HIPCAD_JTI_STRICT``, the
    default) therefore refuses every token it cannot check across replicas (the EHR's calls get 401
    until the database is back: security over availability); ``strict=False`` accepts on this
    replica's memory alone (cards keep coming; a token captured and replayed to another replica
    within its lifetime is accepted there).
    """

    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    purge_every: int = 1000
    remember: Callable[[str, str, float], bool] | None = None
    strict: bool = True

    def check_and_add(self, issuer: str, jti: str, expires: float) -> None:
        now = time.time()
        with self.lock:
            if len(self.seen) % self.purge_every == 0:  # forget expired tokens now and then
                self.seen = {key: exp for key, exp in self.seen.items() if exp > now}
            replayed = (issuer, jti) in self.seen
            self.seen[(issuer, jti)] = expires
        if not replayed and self.remember is not None:
            try:
                replayed = not self.remember(issuer, jti, expires)
            except Exception as exc:
                if self.strict:
                    raise AuthenticationError(
                        f"JWT jti cannot be checked across replicas: the replay store is unavailable "
                        f"({type(exc).__name__}); refused because HIPCAD_JTI_STRICT is on"
                    ) from None
                log.warning("jti replay store unavailable; this replica's memory only: %s", type(exc).__name__)
        if replayed:
            raise AuthenticationError(
                f"JWT jti replayed: issuer {_show(issuer)} sent a token with the same jti twice "
                "(a retried request must carry a fresh JWT)"
            )


class JwksCache:
    """JWKS documents fetched over HTTPS (httpx), cached per URL, refreshed on an unknown ``kid``.

    A set is refetched when a ``kid`` it lacks is presented (the issuer rotated its keys) or when it
    is older than ``max_age_s`` (keys the issuer retired stop being accepted), but never more often
    than once per ``min_refresh_s`` per URL, failed attempts included: a flood of unknown ``kid`` values,
    or a JWKS server that is down, costs one request per interval. While a refresh fails, the keys
    already held stay usable. ``fetches`` counts the requests made per URL (for tests and operators).
    """

    def __init__(self, timeout_s: float = 3.0, min_refresh_s: float = 10.0, max_age_s: float = 3600.0) -> None:
        self.timeout_s = timeout_s
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self.fetches: dict[str, int] = {}
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched: dict[str, float] = {}
        self._attempted: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def _wanted(self, url: str, kid: str) -> bool:
        """Whether the set at ``url`` should be (re)fetched for ``kid``, and the interval allows it."""
        now = time.monotonic()
        stale = url in self._fetched and now - self._fetched[url] >= self.max_age_s
        if kid in self._keys.get(url, {}) and not stale:
            return False
        return url not in self._attempted or now - self._attempted[url] >= self.min_refresh_s

    async def key(self, url: str, kid: str) -> Any:
        """The verification key for ``kid`` at ``url``, fetching or refreshing the set when needed."""
        if self._wanted(url, kid):
            async with self._lock:
                if self._wanted(url, kid):  # another request may have fetched it while we waited
                    self._attempted[url] = time.monotonic()
                    self.fetches[url] = self.fetches.get(url, 0) + 1
                    try:
                        self._keys[url] = await self._fetch(url)
                        self._fetched[url] = time.monotonic()
                    except AuthenticationError as exc:
                        if kid not in self._keys.get(url, {}):
                            raise
                        log.warning("JWKS refresh failed; the keys held are used: %s", exc)
        keys = self._keys.get(url, {})
        if kid not in keys:
            known = ", ".join(sorted(keys)) or "none usable"
            raise AuthenticationError(f"JWT kid {_show(kid)} not found in the JWKS at {url} (kids there: {known})")
        return keys[kid]

    async def _fetch(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise AuthenticationError(f"JWKS unreachable: {url} answered HTTP {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise AuthenticationError(f"JWKS unreachable: {url} ({type(exc).__name__})") from exc
        try:
            jwks = pyjwt.PyJWKSet.from_dict(response.json())
        except (ValueError, pyjwt.PyJWTError) as exc:
            raise AuthenticationError(f"JWKS at {url} is not a usable JWK set ({type(exc).__name__})") from exc
        return {key.key_id: key.key for key in jwks.keys if key.key_id and key.algorithm_name in ALGORITHMS}


#: ``hipcad_auth_failures_total{reason}``: the start of each refusal's message (this module's own
#: wording) → a reason from a fixed set, so a dashboard tells a key rotation from a clock skew.
FAILURE_REASONS: tuple[tuple[str, str], ...] = (
    ("no bearer token", "missing"),
    ("malformed JWT", "malformed"),
    ("JWT algorithm", "algorithm"),
    ("JWT typ", "malformed"),
    ("untrusted JWT issuer", "issuer"),
    ("JWT header has no kid", "key"),
    ("JWT jku", "key"),
    ("JWT kid", "key"),
    ("JWKS", "jwks"),
    ("no key configured", "key"),
    ("JWT signature", "signature"),
    ("JWT expired", "expired"),
    ("JWT not yet valid", "clock"),
    ("JWT issued in the future", "clock"),
    ("JWT lifetime", "lifetime"),
    ("JWT audience", "audience"),
    ("JWT lacks the required claim", "claims"),
    ("JWT tenant", "tenant"),
    ("JWT jti replayed", "replay"),
    ("JWT jti cannot be checked", "replay_store"),
)


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a refused token: one of :data:`FAILURE_REASONS`, ``other`` for a refusal
    worded otherwise, ``error`` for an unexpected exception (the web layer answers 401 all the same)."""
    if not isinstance(exc, AuthenticationError):
        return "error"
    message = str(exc)
    return next((reason for prefix, reason in FAILURE_REASONS if message.startswith(prefix)), "other")


class JwtVerifier:
    """Verifies CDS Hooks request JWTs for a set of trusted issuers."""

    def __init__(
        self,
        issuers: list[TrustedIssuer],
        leeway_s: int = 30,
        max_lifetime_s: int = 3600,
        jwks: JwksCache | None = None,
        jti_strict: bool = True,
    ) -> None:
        self.issuers = {issuer.issuer: issuer for issuer in issuers}
        self._builtin = {
            issuer.issuer: {
                jwk["kid"]: pyjwt.PyJWK.from_dict(dict(jwk)).key for jwk in issuer.builtin_jwks if jwk.get("kid")
            }
            for issuer in issuers
            if issuer.builtin_jwks
        }
        self.leeway_s = leeway_s
        self.max_lifetime_s = max_lifetime_s
        self.jwks = jwks or JwksCache()
        self.replays = ReplayCache(strict=jti_strict)

    async def verify(self, authorization: str | None, audience: str | Sequence[str]) -> dict[str, Any]:
        """Check the ``Authorization`` header against ``audience`` (the exact URL invoked, or the URLs an
        EHR profile accepts: :func:`cds_service.cdshooks.profiles.audiences`); return the claims.

        Spanned (``jwt_verify``: the JWKS fetch and the ``jti`` check are its children); a refusal is
        counted in ``hipcad_auth_failures_total`` by :func:`failure_reason`, and the span says the reason.
        """
        with tracer().start_as_current_span("jwt_verify") as span:
            try:
                claims = await self._verify(authorization, audience)
            except Exception as exc:
                reason = failure_reason(exc)
                AUTH_FAILURES.labels(reason=reason).inc()
                span.set_attribute("hipcad.auth_failure", reason)
                raise
            return claims

    async def _verify(self, authorization: str | None, audience: str | Sequence[str]) -> dict[str, Any]:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthenticationError("no bearer token in the Authorization header")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header = pyjwt.get_unverified_header(token)
            unverified = pyjwt.decode(token, options={"verify_signature": False})
        except pyjwt.PyJWTError as exc:
            raise AuthenticationError(f"malformed JWT ({type(exc).__name__})") from exc
        if header.get("alg") not in ALGORITHMS:
            raise AuthenticationError(
                f"JWT algorithm {_show(header.get('alg'))} not allowed (accepted: {', '.join(ALGORITHMS)})"
            )
        if header.get("typ", "JWT") != "JWT":
            raise AuthenticationError(f"JWT typ {_show(header.get('typ'))} is not JWT")
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            trusted = ", ".join(repr(name) for name in self.issuers) or "none configured"
            raise AuthenticationError(f"untrusted JWT issuer {_show(unverified.get('iss'))} (trusted: {trusted})")
        key = await self._key(issuer, header)
        try:
            claims = pyjwt.decode(
                token,
                key=key,
                algorithms=list(ALGORITHMS),
                audience=audience if isinstance(audience, str) else list(audience),
                issuer=issuer.issuer,
                leeway=self.leeway_s,
                options={"require": list(REQUIRED_CLAIMS), "verify_iat": True},
            )
        except pyjwt.PyJWTError as exc:
            raise AuthenticationError(self._reason(exc, issuer, header, unverified, audience)) from exc
        now = time.time()
        if float(claims["iat"]) > now + self.leeway_s:
            raise AuthenticationError(
                f"JWT issued in the future (iat {_when(claims['iat'])}, now {_when(now)}): check the clocks"
            )
        lifetime = float(claims["exp"]) - float(claims["iat"])
        if lifetime > self.max_lifetime_s:
            raise AuthenticationError(f"JWT lifetime {lifetime:.0f} s exceeds the maximum {self.max_lifetime_s} s")
        if issuer.tenants is not None and claims.get("tenant") not in issuer.tenants:
            raise AuthenticationError(
                f"JWT tenant {_show(claims.get('tenant'))} not allowed for issuer {_show(issuer.issuer)}"
            )
        await asyncio.to_thread(
            self.replays.check_and_add, issuer.issuer, str(claims["jti"]), float(claims["exp"]) + self.leeway_s
        )
        return claims

    def _reason(
        self,
        exc: pyjwt.PyJWTError,
        issuer: TrustedIssuer,
        header: dict[str, Any],
        unverified: dict[str, Any],
        audience: str | Sequence[str],
    ) -> str:
        """Why PyJWT refused the token, in operator terms (PyJWT checks the signature before the claims)."""
        who = f"issuer {_show(issuer.issuer)}"
        if isinstance(exc, pyjwt.ExpiredSignatureError):
            return (
                f"JWT expired (exp {_when(unverified.get('exp'))}, now {_when(time.time())}, "
                f"leeway {self.leeway_s} s; {who})"
            )
        if isinstance(exc, pyjwt.InvalidAudienceError):
            expected = repr(audience) if isinstance(audience, str) else " or ".join(map(repr, audience))
            return f"JWT audience mismatch: expected {expected}, received {_show(unverified.get('aud'), 300)} ({who})"
        if isinstance(exc, pyjwt.MissingRequiredClaimError):
            return f"JWT lacks the required claim {exc.claim!r} ({who})"
        if isinstance(exc, pyjwt.ImmatureSignatureError):
            return f"JWT not yet valid (iat {_when(unverified.get('iat'))}, now {_when(time.time())}): check the clocks"
        if isinstance(exc, pyjwt.InvalidSignatureError):
            return f"JWT signature does not verify with the key {_show(header.get('kid'))} of {who}"
        if isinstance(exc, pyjwt.InvalidAlgorithmError):
            return f"JWT algorithm {_show(header.get('alg'))} does not fit the key {_show(header.get('kid'))} of {who}"
        return f"JWT rejected ({type(exc).__name__}: {exc}; {who})"

    async def _key(self, issuer: TrustedIssuer, header: dict[str, Any]) -> Any:
        kid = header.get("kid")
        if not kid:
            raise AuthenticationError(f"JWT header has no kid (issuer {_show(issuer.issuer)})")
        jku = header.get("jku")
        if jku is not None and jku not in issuer.jku_allowed:
            raise AuthenticationError(f"JWT jku {_show(jku)} not allow-listed for issuer {_show(issuer.issuer)}")
        builtin = self._builtin.get(issuer.issuer, {})
        if str(kid) in builtin:
            return builtin[str(kid)]
        if jku is not None:
            return await self.jwks.key(jku, str(kid))
        if issuer.jwks_url:
            return await self.jwks.key(issuer.jwks_url, str(kid))
        if issuer.public_key_pem:
            return serialization.load_pem_public_key(issuer.public_key_pem)
        if builtin:
            raise AuthenticationError(
                f"JWT kid {_show(kid)} is not a built-in key of issuer {_show(issuer.issuer)} "
                f"(built in: {', '.join(sorted(builtin))})"
            )
        raise AuthenticationError(f"no key configured for issuer {_show(issuer.issuer)}")


def sign_request_jwt(
    private_key_pem: bytes,
    issuer: str,
    audience: str,
    kid: str = "ehr-key-1",
    lifetime_s: int = 300,
    extra_claims: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign a CDS Hooks request JWT as an EHR would (ES384, 5-minute lifetime)."""
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "iat": now, "exp": now + lifetime_s, "jti": str(uuid.uuid4())}
    claims.update(extra_claims or {})
    return pyjwt.encode(
        claims, private_key_pem, algorithm="ES384", headers={"kid": kid, "typ": "JWT", **(headers or {})}
    )


def public_jwks(public_key_pem: bytes, kid: str = "ehr-key-1") -> dict[str, Any]:
    """A JWKS document for a PEM public key (what an EHR publishes)."""
    key = serialization.load_pem_public_key(public_key_pem)
    jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(key))
    jwk.update({"kid": kid, "alg": "ES384", "use": "sig"})
    return {"keys": [jwk]}


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
