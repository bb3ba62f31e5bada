"""Schema version 3: names and versions as text of any length, and artifact sizes past 2 GB.
PostgreSQL enforced the old widths (a `bench` of a file deep in a tree has a recipe name past 200
characters; a large model's library passes 2^31 bytes), so such a row failed to store; SQLite never
enforced them and keeps its tables as they are.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TEXT_COLUMNS = {"runs": ("recipe_name", "hostname", "cpu"),
                "measurements": ("model", "variant", "target", "engine_version")}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":  # SQLite: a declared width is only a comment
        for table, columns in TEXT_COLUMNS.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.Text)
        op.alter_column("measurements", "artifact_bytes", type_=sa.BigInteger)
    op.execute("UPDATE schema_info SET version = 3 WHERE id = 1")


def downgrade() -> None:
    op.execute("UPDATE schema_info SET version = 2 WHERE id = 1")
