"""Schema version 4: every measured row says how its samples were spread (`details.span_s`), which
is part of a series' setup. Rows from before it was recorded in rows take it from their run's recipe
(`[measure] span_s`), and rows from before it existed were measured back to back (0 s): without it
they would match any setup, and a nightly spread over 8 s would be judged against them.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("recipe", sa.JSON))
measurements = sa.table("measurements", sa.column("id", sa.Integer), sa.column("run_id", sa.Integer),
                        sa.column("median_ms", sa.Float), sa.column("details", sa.JSON))


def upgrade() -> None:
    conn = op.get_bind()
    spans = {run_id: ((recipe or {}).get("measure") or {}).get("span_s", 0.0)
             for run_id, recipe in conn.execute(sa.select(runs.c.id, runs.c.recipe))}
    rows = conn.execute(sa.select(measurements.c.id, measurements.c.run_id, measurements.c.details)
                        .where(measurements.c.median_ms.is_not(None))).all()
    updates = [{"row_id": row_id, "details": (details or {}) | {"span_s": spans.get(run_id, 0.0)}}
               for row_id, run_id, details in rows if "span_s" not in (details or {})]
    if updates:
        conn.execute(measurements.update().where(measurements.c.id == sa.bindparam("row_id"))
                     .values(details=sa.bindparam("details")), updates)
    op.execute("UPDATE schema_info SET version = 4 WHERE id = 1")


def downgrade() -> None:  # the spans stay: an older release reads them as before
    op.execute("UPDATE schema_info SET version = 3 WHERE id = 1")
