"""Runs migrations on the connection results.Store hands over (config.attributes["connection"])."""

from alembic import context

connection = context.config.attributes["connection"]
# Batch mode lets later revisions alter columns on SQLite, which has no ALTER COLUMN.
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
