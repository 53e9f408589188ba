import time

import jwt as pyjwt
import pytest

from cds_service.cdshooks.jwt import TrustedIssuer, sign_request_jwt, verify_request_jwt
from cds_service.errors import AuthenticationError

AUD = "http://127.0.0.1:8080/cds-services/hip-fracture-order-select"


@pytest.fixture
def issuer(ehr_keys) -> TrustedIssuer:
    return TrustedIssuer("hipcad-demo-ehr", ehr_keys[1].read_bytes())


def test_a_correctly_signed_token_is_accepted(ehr_keys, issuer):
    token = sign_request_jwt(ehr_keys[0], "hipcad-demo-ehr", AUD)
    claims = verify_request_jwt(f"Bearer {token}", AUD, [issuer])
    assert claims["iss"] == "hipcad-demo-ehr" and claims["jti"]


def test_wrong_audience_is_refused(ehr_keys, issuer):
    token = sign_request_jwt(ehr_keys[0], "hipcad-demo-ehr", AUD + "-other")
    with pytest.raises(AuthenticationError):
        verify_request_jwt(f"Bearer {token}", AUD, [issuer])


def test_unknown_issuer_is_refused(ehr_keys, issuer):
    token = sign_request_jwt(ehr_keys[0], "someone-else", AUD)
    with pytest.raises(AuthenticationError, match="untrusted"):
        verify_request_jwt(f"Bearer {token}", AUD, [issuer])


def test_alg_none_is_refused(issuer):
    now = int(time.time())
    claims = {"iss": "hipcad-demo-ehr", "aud": AUD, "iat": now, "exp": now + 60, "jti": "x"}
    token = pyjwt.encode(claims, None, algorithm="none")
    with pytest.raises(AuthenticationError, match="algorithm"):
        verify_request_jwt(f"Bearer {token}", AUD, [issuer])


def test_hmac_with_the_public_key_as_secret_is_refused(ehr_keys, issuer):
    now = int(time.time())
    claims = {"iss": "hipcad-demo-ehr", "aud": AUD, "iat": now, "exp": now + 60, "jti": "x"}
    token = pyjwt.encode(claims, b"x" * 32, algorithm="HS256")
    with pytest.raises(AuthenticationError, match="algorithm"):
        verify_request_jwt(f"Bearer {token}", AUD, [issuer])


def test_expired_token_is_refused(ehr_keys, issuer):
    now = int(time.time()) - 3600
    claims = {"iss": "hipcad-demo-ehr", "aud": AUD, "iat": now, "exp": now + 60, "jti": "x"}
    token = pyjwt.encode(claims, ehr_keys[0], algorithm="ES384", headers={"kid": "k"})
    with pytest.raises(AuthenticationError):
        verify_request_jwt(f"Bearer {token}", AUD, [issuer])


def test_missing_jti_is_refused(ehr_keys, issuer):
    now = int(time.time())
    claims = {"iss": "hipcad-demo-ehr", "aud": AUD, "iat": now, "exp": now + 60}
    token = pyjwt.encode(claims, ehr_keys[0], algorithm="ES384", headers={"kid": "k"})
    with pytest.raises(AuthenticationError):
        verify_request_jwt(f"Bearer {token}", AUD, [issuer])


def test_no_header_is_refused(issuer):
    with pytest.raises(AuthenticationError):
        verify_request_jwt(None, AUD, [issuer])
