"""The last known model contract (served model versions per ensemble), for answering while Triton is down.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "model_contract" not in set(sa.inspect(op.get_bind()).get_table_names()):
        op.create_table(
            "model_contract",
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("label", sa.Text, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("model_contract")
