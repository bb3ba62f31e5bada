"""Schema version 2: a per-operator profile (operator -> median ms) with each TVM measurement,
which regression verdicts diff to say which operators moved.

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
    with op.batch_alter_table("measurements") as batch:
        batch.add_column(sa.Column("profile_ms", sa.JSON, nullable=True))
    op.execute("UPDATE schema_info SET version = 2 WHERE id = 1")


def downgrade() -> None:
    with op.batch_alter_table("measurements") as batch:
        batch.drop_column("profile_ms")
    op.execute("UPDATE schema_info SET version = 1 WHERE id = 1")
