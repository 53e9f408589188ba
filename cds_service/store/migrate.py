"""Run the shipped Alembic migrations (``cds-service migrate``, and at start-up).

:func:`upgrade_when_reachable` waits for a database that is not there yet (a Kubernetes init container
started before PostgreSQL, a failover in progress): it retries with capped exponential backoff and
jitter, logging each attempt as one line (the error's type, never its message), instead of exiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: What "the database cannot be reached (yet)" raises: connection refused, reset, timed out, starting up.
UNREACHABLE = (OperationalError, InterfaceError)
FIRST_DELAY_S = 0.5

log = logging.getLogger(__name__)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database behind ``engine`` to ``revision`` (idempotent; concurrent-safe on PostgreSQL).

    On PostgreSQL an advisory lock serialises replicas that start at once, so only one migrates.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")  # any fixed number: "hipcad"
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def backoff_delays(max_delay_s: float, first_s: float = FIRST_DELAY_S) -> Callable[[], float]:
    """Delays 0.5, 1, 2, 4 … s capped at ``max_delay_s``, each ±20 % so replicas do not retry in step."""
    attempt = 0

    def next_delay() -> float:
        nonlocal attempt
        delay = min(max_delay_s, first_s * 2**attempt)
        attempt += 1
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret

    return next_delay


def upgrade_when_reachable(
    engine: Engine,
    revision: str = "head",
    *,
    max_delay_s: float = 30.0,
    give_up_after_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """:func:`upgrade`, retried while the database is unreachable; returns the attempts it took.

    Waits forever unless ``give_up_after_s`` is given (then the last error is raised). Errors other
    than "unreachable" (a failing migration) are raised at once: retrying would not change them.
    """
    delays = backoff_delays(max_delay_s)
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            upgrade(engine, revision)
        except UNREACHABLE as exc:
            waited = time.monotonic() - started
            if give_up_after_s is not None and waited >= give_up_after_s:
                log.error(
                    "database unreachable (%s) after %d attempts in %.0f s: giving up",
                    type(exc).__name__,
                    attempt,
                    waited,
                )
                raise
            delay = delays()
            log.warning("database unreachable (%s), attempt %d; retrying in %.1f s", type(exc).__name__, attempt, delay)
            sleep(delay)
            attempt += 1
        else:
            if attempt > 1:
                log.info("database reachable after %d attempts; schema at %s", attempt, revision)
            return attempt
