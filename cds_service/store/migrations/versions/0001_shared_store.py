"""The shared store: results, viewer links, leases, cards, feedback, JWT replay cache.

Revision ID: 0001
Revises:
A SQLite file written by the feedback store before migrations existed already holds ``card`` and
``feedback`` with this very shape: those tables are adopted, not recreated, so no feedback is lost.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "result" not in existing:
        op.create_table(
            "result",
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("payload", sa.LargeBinary, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
        op.create_index("ix_result_expires_at", "result", ["expires_at"])
    if "viewer_link" not in existing:
        op.create_table(
            "viewer_link",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("result_key", sa.String(64), nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
        op.create_index("ix_viewer_link_expires_at", "viewer_link", ["expires_at"])
    if "lease" not in existing:
        op.create_table(
            "lease",
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("owner", sa.String(128), nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
    if "card" not in existing:
        op.create_table(
            "card",
            sa.Column("uuid", sa.Text, primary_key=True),
            sa.Column("service", sa.Text, nullable=False),
            sa.Column("indicator", sa.Text, nullable=False),
            sa.Column("issued", sa.Text, nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")),
        )
    if "feedback" not in existing:
        op.create_table(
            "feedback",
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("service", sa.Text, nullable=False),
            sa.Column("card", sa.Text, nullable=False),
            sa.Column("outcome", sa.Text, nullable=False),
            sa.Column("reason", sa.Text),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("outcome_timestamp", sa.Text, nullable=False),
            sa.Column("received", sa.Text, nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")),
        )
    if "jwt_replay" not in existing:
        op.create_table(
            "jwt_replay",
            sa.Column("issuer", sa.Text, primary_key=True),
            sa.Column("jti", sa.Text, primary_key=True),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
        op.create_index("ix_jwt_replay_expires_at", "jwt_replay", ["expires_at"])


def downgrade() -> None:
    for table in ("jwt_replay", "lease", "viewer_link", "result"):
        op.drop_table(table)
