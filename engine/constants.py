"""Names shared by the engine, the migrations and the tooling: table names,
NOTIFY channels and the default database URL, kept in one place.
"""

from __future__ import annotations

EVENTS_TABLE = "task_events"
EVENTS_UNIQUE_CONSTRAINT = "task_events_task_id_version_key"
NOTIFY_CHANNEL = "taskengine_events"
# Notified (without payload) by an append that made tasks runnable.
RUNNABLE_CHANNEL = "taskengine_runnable"
# PostgreSQL-only projections of the log kept for the cluster (engine/cluster.py).
RUNNABLE_TABLE = "task_runnable"
LEASES_TABLE = "task_leases"
NODES_TABLE = "task_nodes"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///taskengine.db"
DATABASE_URL_ENV = "TASKENGINE_DATABASE_URL"
LOGGER_NAME = "engine"

# Longest task id accepted: PostgreSQL's unique index on (task_id, version)
# cannot hold much longer keys, and every backend keeps the same rule.
MAX_TASK_ID_LENGTH = 512
