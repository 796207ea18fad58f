"""Alembic environment and revisions of the taskengine event log."""
