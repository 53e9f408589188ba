"""Cards name the result they show, so each clinician assessment (feedback) is kept with the result.

Revision ID: 0003
Revises: 0002

``card.result_key`` (the result's digest), ``card.report`` (the DiagnosticReport the card suggests)
and ``card.imaging_study`` (the analysed ImagingStudy), all nullable: cards issued before this
revision, and problem cards, name no result. Indexes for the join result → card → feedback.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {column["name"] for column in inspector.get_columns("card")}
    for name, kind in (("result_key", sa.String(64)), ("report", sa.Text()), ("imaging_study", sa.Text())):
        if name not in columns:
            op.add_column("card", sa.Column(name, kind, nullable=True))
    if "ix_card_result_key" not in {index["name"] for index in inspector.get_indexes("card")}:
        op.create_index("ix_card_result_key", "card", ["result_key"])
    if "ix_feedback_card" not in {index["name"] for index in inspector.get_indexes("feedback")}:
        op.create_index("ix_feedback_card", "feedback", ["card"])


def downgrade() -> None:
    op.drop_index("ix_feedback_card", "feedback")
    op.drop_index("ix_card_result_key", "card")
    with op.batch_alter_table("card") as batch:  # SQLite drops columns by copying the table
        for name in ("imaging_study", "report", "result_key"):
            batch.drop_column(name)
