"""Create the cluster's tables on PostgreSQL: runnable tasks, leases, nodes.

``task_runnable`` holds the tasks whose last event is ``queued`` and
``task_leases`` those whose last event is ``started`` or ``progress``: both
are projections of the log, written in the transaction of the events they
mirror and rebuilt from the log here. ``task_nodes`` holds each live node's
heartbeat. SQLite has no cluster, so this revision changes nothing there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    op.create_table(
        "task_runnable",
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("priority", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
    )
    op.create_index("task_runnable_order", "task_runnable", ["priority", "position"])
    op.create_table(
        "task_leases",
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("node_id", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
    )
    op.create_index("task_leases_node", "task_leases", ["node_id"])
    op.create_table(
        "task_nodes",
        sa.Column("node_id", sa.Text(), primary_key=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    from engine.store.postgres import REBUILD_STATEMENTS

    for statement in REBUILD_STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    if not _postgresql():
        return
    op.drop_table("task_nodes")
    op.drop_index("task_leases_node", table_name="task_leases")
    op.drop_table("task_leases")
    op.drop_index("task_runnable_order", table_name="task_runnable")
    op.drop_table("task_runnable")
