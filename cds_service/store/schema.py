"""The shared store's tables (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

Changed only through a migration in ``migrations/versions`` (Alembic); times are Unix seconds
(float), compared against each replica's clock (NTP-synchronised in any cluster).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, LargeBinary, MetaData, String, Table, Text, text

metadata = MetaData()

#: Analysed results, keyed by ResultKey.digest() (SHA-256: no identifier in clear).
result = Table(
    "result",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("payload", LargeBinary, nullable=False),  # codec.encode(Analysis)
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_result_expires_at", "expires_at"),
)

#: Viewer links: a random result id (in the signed token) → the result it shows.
viewer_link = Table(
    "viewer_link",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("result_key", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_viewer_link_expires_at", "expires_at"),
)

#: In-flight claims: the replica analysing an image holds its key until done or ``expires_at``.
lease = Table(
    "lease",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)

#: CDS Hooks cards issued (for feedback joins and rates per indicator). A finding card names the result
#: it shows (``result_key``, the result's digest, through the viewer link on the card) and the FHIR
#: resources its assessment refers to: the DiagnosticReport its suggestion creates (``report``) and the
#: analysed ImagingStudy (``imaging_study``), as relative references. Problem cards have none.
card = Table(
    "card",
    metadata,
    Column("uuid", Text, primary_key=True),
    Column("service", Text, nullable=False),
    Column("indicator", Text, nullable=False),
    Column("issued", Text, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    Column("result_key", String(64)),
    Column("report", Text),
    Column("imaging_study", Text),
    Index("ix_card_result_key", "result_key"),
)

#: CDS Hooks feedback entries, stored once each (keyed by their content hash).
feedback = Table(
    "feedback",
    metadata,
    Column("key", Text, primary_key=True),
    Column("service", Text, nullable=False),
    Column("card", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("reason", Text),
    Column("body", Text, nullable=False),
    Column("outcome_timestamp", Text, nullable=False),
    Column("received", Text, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    Index("ix_feedback_card", "card"),
)

#: JWT ``jti`` replay cache: (issuer, jti) seen, until the token expires.
jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("issuer", Text, primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("expires_at", Float, nullable=False),
    Index("ix_jwt_replay_expires_at", "expires_at"),
)

#: The last known model contract: the served versions (the result key's label) per Triton ensemble,
#: so stored results stay answerable while Triton is down or restarting.
model_contract = Table(
    "model_contract",
    metadata,
    Column("model", Text, primary_key=True),
    Column("label", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)
