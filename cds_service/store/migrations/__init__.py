"""Alembic migrations of the shared store (shipped with the package; run by ``cds-service migrate``)."""
