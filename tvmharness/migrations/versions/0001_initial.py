"""Schema version 1: runs, measurements and schema_info, as the first release created them.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_info",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recipe_name", sa.String(200), nullable=False),
        sa.Column("recipe_hash", sa.String(64), nullable=False),
        sa.Column("recipe", sa.JSON, nullable=False),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("cpu", sa.String(200), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=False),
        sa.Column("provenance", sa.JSON, nullable=False),
    )
    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("variant", sa.String(200), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("engine", sa.String(50), nullable=False),
        sa.Column("engine_version", sa.String(100), nullable=False),
        sa.Column("is_baseline", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("threads", sa.Integer, nullable=True),
        sa.Column("batch", sa.Integer, nullable=False),
        sa.Column("median_ms", sa.Float, nullable=True),
        sa.Column("p90_ms", sa.Float, nullable=True),
        sa.Column("iqr_ms", sa.Float, nullable=True),
        sa.Column("samples_ms", sa.JSON, nullable=True),
        sa.Column("speedup_vs_baseline", sa.Float, nullable=True),
        sa.Column("artifact_bytes", sa.Integer, nullable=True),
        sa.Column("max_abs_diff", sa.Float, nullable=True),
        sa.Column("top1_agreement", sa.Float, nullable=True),
        sa.Column("accuracy", sa.Float, nullable=True),
        sa.Column("tuned", sa.Boolean, nullable=True),
        sa.Column("cache_hit", sa.Boolean, nullable=True),
        sa.Column("meets_goals", sa.Boolean, nullable=True),
        sa.Column("target_spec", sa.JSON, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_measurements_run_id", "measurements", ["run_id"])
    op.create_index("ix_measurements_model", "measurements", ["model"])
    op.execute("INSERT INTO schema_info (id, version) VALUES (1, 1)")


def downgrade() -> None:
    op.drop_table("measurements")
    op.drop_table("runs")
    op.drop_table("schema_info")
