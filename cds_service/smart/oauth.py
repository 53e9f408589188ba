"""The OAuth 2.0 side of a SMART launch, through Authlib: the authorize URL (PKCE S256) and the code exchange.

SMART App Launch 2.0 § "App Launch: Launch and Authorization":

* authorize request (§ 2.0.5): ``response_type=code``, ``client_id``, ``redirect_uri``, ``launch`` (EHR
  launch), ``scope``, ``state``, ``aud`` (the FHIR base, so that a token is never issued for another
  server) and ``code_challenge`` / ``code_challenge_method=S256`` (RFC 7636);
* token request (§ 2.0.7): ``grant_type=authorization_code``, ``code``, ``redirect_uri``,
  ``code_verifier``, and the client's authentication:

  - public client: ``client_id`` in the body (``token_endpoint_auth_method`` ``none``);
  - confidential symmetric: HTTP Basic with ``client_secret`` (``client_secret_basic``);
  - confidential asymmetric (SMART § Client Authentication: Asymmetric): a ``private_key_jwt``
    assertion (RFC 7523) signed RS384 or ES384 with ``kid`` and ``typ: JWT`` headers.

The token response (§ 2.0.8) carries the launch context beside the token: ``patient``, and the
``appContext`` a CDS Hooks ``smart`` link passed through the EHR.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey, RSAKey

from cds_service.settings import Settings
from cds_service.smart.discovery import LaunchRefused, SmartConfiguration

#: RFC 7636 § 4.1: 43 to 128 characters; 64 random URL-safe characters here.
CODE_VERIFIER_LENGTH = 64


@dataclass(frozen=True)
class TokenResponse:
    """What the service keeps from a token response (SMART § 2.0.8); never logged."""

    access_token: str
    scope: str
    expires_in: int | None
    patient: str | None
    app_context: str | None


def redirect_uri(settings: Settings) -> str:
    """The registered ``redirect_uri``: ``HIPCAD_SMART_REDIRECT_URI``, else ``<base>/smart/callback``."""
    return settings.smart_redirect_uri or f"{settings.base_url()}/smart/callback"


def _client_key(settings: Settings) -> RSAKey | ECKey | None:
    """The private key of an asymmetric client (``HIPCAD_SMART_PRIVATE_KEY_FILE``), or None."""
    if settings.smart_private_key_file is None:
        return None
    pem = settings.smart_private_key_file.read_bytes()
    try:
        return ECKey.import_key(pem)
    except ValueError:
        return RSAKey.import_key(pem)


def oauth_client(settings: Settings, config: SmartConfiguration, timeout_s: float = 10.0) -> AsyncOAuth2Client:
    """An Authlib client for the EHR's authorization server: PKCE S256 and the configured client authentication."""
    key = _client_key(settings)
    # RFC 7591 names: private_key_jwt (asymmetric), client_secret_basic (symmetric), none (public).
    method = "private_key_jwt" if key is not None else "client_secret_basic" if settings.smart_client_secret else "none"
    client = AsyncOAuth2Client(
        client_id=settings.smart_client_id,
        client_secret=key if key is not None else settings.smart_client_secret or None,
        token_endpoint_auth_method=method,
        redirect_uri=redirect_uri(settings),
        code_challenge_method="S256",
        timeout=timeout_s,
        follow_redirects=False,
    )
    if key is not None:
        headers = {"typ": "JWT", **({"kid": settings.smart_key_id} if settings.smart_key_id else {})}
        alg = "ES384" if isinstance(key, ECKey) else "RS384"
        client.register_client_auth_method(PrivateKeyJWT(config.token_endpoint, headers=headers, alg=alg))
    return client


def launch_scope(settings: Settings, ehr_launch: bool) -> str:
    """The scopes to request: ``launch`` for an EHR launch, ``launch/patient`` (a patient picker) standalone."""
    scopes = settings.smart_scope.split()
    if not ehr_launch:
        scopes = ["launch/patient" if s == "launch" else s for s in scopes]
    return " ".join(dict.fromkeys(scopes))


def new_code_verifier() -> str:
    """A fresh PKCE ``code_verifier`` (RFC 7636 § 4.1, unreserved characters only)."""
    return generate_token(CODE_VERIFIER_LENGTH)


def new_state() -> str:
    """A fresh, unguessable ``state`` (RFC 6749 § 10.12)."""
    return generate_token(48)


def authorization_url(
    settings: Settings, config: SmartConfiguration, state: str, code_verifier: str, launch: str | None
) -> str:
    """The authorize URL to send the browser to (SMART § 2.0.5), with the S256 challenge of ``code_verifier``."""
    extra = {"aud": config.iss, **({"launch": launch} if launch else {})}
    client = oauth_client(settings, config)
    url, _ = client.create_authorization_url(
        config.authorization_endpoint,
        state=state,
        code_verifier=code_verifier,
        scope=launch_scope(settings, ehr_launch=launch is not None),
        **extra,
    )
    return url


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def exchange_code(
    settings: Settings, config: SmartConfiguration, code: str, code_verifier: str, timeout_s: float = 10.0
) -> TokenResponse:
    """Exchange ``code`` at the token endpoint (SMART § 2.0.7); raises :class:`LaunchRefused` (502)."""
    try:
        async with asyncio.timeout(timeout_s), oauth_client(settings, config, timeout_s) as client:
            token = await client.fetch_token(
                config.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                redirect_uri=redirect_uri(settings),
            )
    except OAuthError:
        raise LaunchRefused("The EHR's authorization server refused to complete this launch.", 502) from None
    except Exception:  # unreachable, timed out, not JSON: the launch fails with a page, never a 500
        raise LaunchRefused("The EHR's authorization server could not be reached.", 502) from None
    access_token = _text(token.get("access_token"))
    if access_token is None or str(token.get("token_type", "")).lower() != "bearer":
        raise LaunchRefused("The EHR's authorization server answered without a usable access token.", 502)
    app_context = token.get("appContext")
    if isinstance(app_context, dict | list):  # some servers hand it over parsed
        app_context = json.dumps(app_context)
    expires_in = token.get("expires_in")
    return TokenResponse(
        access_token=access_token,
        scope=str(token.get("scope") or ""),
        expires_in=int(expires_in) if isinstance(expires_in, int | float) else None,
        patient=_text(token.get("patient")),
        app_context=_text(app_context),
    )
