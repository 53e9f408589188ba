"""The ``jti`` replay check while the shared database is down (issue 30): two replicas, one real PostgreSQL.

Strict (``HIPCAD_JTI_STRICT``, the default): what cannot be checked across replicas is refused, so a
token replayed to the other replica during the outage is refused. Not strict: each replica's memory
only; the replay on the same replica is refused, the one on the other replica is not (the trade-off
the setting documents).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cds_service.cdshooks.jwt import JwtVerifier, TrustedIssuer, sign_request_jwt
from cds_service.errors import AuthenticationError
from cds_service.store.migrate import upgrade
from cds_service.store.sql import SqlStore, engine_for
from tests.servers.postgres import PostgresServer

AUD = "http://hipcad.test/cds-services/hip-fracture-order-select"
ISS = "hipcad-demo-ehr"


@pytest.fixture
def replicas(postgres_server: PostgresServer, ehr_keys) -> Iterator[tuple[JwtVerifier, JwtVerifier]]:
    """Two replicas' verifiers, each with its own connection pool to the same database (strict)."""
    upgrade(engine_for(postgres_server.url))
    stores = [SqlStore(engine_for(postgres_server.url)) for _ in range(2)]
    verifiers = []
    for store in stores:
        verifier = JwtVerifier([TrustedIssuer(ISS, public_key_pem=ehr_keys[1].read_bytes())])
        verifier.replays.remember = store.remember_jti
        verifiers.append(verifier)
    yield verifiers[0], verifiers[1]
    for store in stores:
        store.close()


@pytest.fixture
def outage(postgres_server: PostgresServer) -> Iterator[None]:
    """PostgreSQL stopped for the test, started again afterwards (other tests share it)."""
    postgres_server.stop()
    try:
        yield
    finally:
        postgres_server.start()


def bearer(ehr_keys) -> str:
    return f"Bearer {sign_request_jwt(ehr_keys[0], ISS, AUD)}"


async def test_a_replay_across_replicas_is_refused_while_the_database_is_up(replicas, ehr_keys):
    first, second = replicas
    token = bearer(ehr_keys)
    await first.verify(token, AUD)
    with pytest.raises(AuthenticationError, match="replayed"):
        await second.verify(token, AUD)


async def test_strict_a_replay_across_replicas_during_an_outage_is_refused(replicas, ehr_keys, outage):
    first, second = replicas
    token = bearer(ehr_keys)
    with pytest.raises(AuthenticationError, match="cannot be checked across replicas"):
        await first.verify(token, AUD)
    with pytest.raises(AuthenticationError, match="cannot be checked across replicas"):
        await second.verify(token, AUD)  # the replay on the other replica


async def test_strict_a_token_used_before_the_outage_is_refused_on_the_other_replica(
    replicas, ehr_keys, postgres_server
):
    first, second = replicas
    token = bearer(ehr_keys)
    await first.verify(token, AUD)
    postgres_server.stop()
    try:
        with pytest.raises(AuthenticationError):
            await second.verify(token, AUD)
    finally:
        postgres_server.start()


async def test_not_strict_falls_back_to_each_replicas_memory(replicas, ehr_keys, outage):
    first, second = replicas
    first.replays.strict = second.replays.strict = False
    token = bearer(ehr_keys)
    await first.verify(token, AUD)
    with pytest.raises(AuthenticationError, match="replayed"):
        await first.verify(token, AUD)  # this replica remembers it
    await second.verify(token, AUD)  # the documented risk of HIPCAD_JTI_STRICT=false
