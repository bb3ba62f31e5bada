"""Alembic migrations of the results store, applied when a Store opens (see results.Store).

A schema change is a new revision in versions/ (`alembic revision` with script_location
tvmharness:migrations); a shipped revision is never edited, so an old store upgrades row for row."""
