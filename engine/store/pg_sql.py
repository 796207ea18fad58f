"""The SQL of the PostgreSQL store: appends, claims, reads and the
statements that rebuild the cluster's projections, with the commit-order
lock they share. This module may import :mod:`engine.constants` only.
"""

from __future__ import annotations

from engine.constants import (
    EVENTS_TABLE,
    LEASES_TABLE,
    NOTIFY_CHANNEL,
    RUNNABLE_CHANNEL,
    RUNNABLE_TABLE,
)

__all__ = [
    "APPEND",
    "CLAIM",
    "COMMIT_ORDER_LOCK_KEY",
    "LAST_POSITION",
    "READ",
    "READ_TASK",
    "REBUILD_STATEMENTS",
]

#: Key of the transaction-level advisory lock every insert into the log
#: takes first (the first eight bytes of sha1("taskengine:append")).
COMMIT_ORDER_LOCK_KEY = 0x2B8E_5F07_4C1D_93A6

# Commit order. Positions come from an identity sequence, and a sequence
# hands out numbers when rows are inserted, not when they commit: with two
# writers, A may take position 7 and B position 8, B commits, a tailing
# reader reads 8 and moves its cursor past 7, then A commits 7 and the reader
# never sees it. Every append therefore takes a transaction-level advisory
# lock before its first row takes a position; the lock is released only
# after the commit is visible, so positions are handed out, and become
# visible, in commit order. The lock sits in a materialised CTE that the
# insert joins, so it is acquired before the first nextval() of the
# statement, and the whole append (lock, insert, NOTIFY, commit) stays one
# round trip. The price is that appends from all processes commit one at a
# time: docs/postgres.md gives the measured cost. The identity sequence must
# keep CACHE 1, or sessions would draw numbers from private ranges out of
# order. The alternative, storing the writer's xid8 and reading only below
# the oldest running transaction, costs a column and a harder read query.
# See https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
#
# The cluster's projections (``task_runnable``: tasks whose last event is
# ``queued``; ``task_leases``: tasks whose last event is ``started`` or
# ``progress``, with the node running them) are written by the same
# statement, so they can never disagree with the log. Only the last event of
# each task in the batch counts: a batch may hold a task's ``queued`` and
# ``started`` together, and the CTEs of one statement share one snapshot. A
# task's first ``queued`` event (version 1) cannot meet a row of its own in
# either table, so it takes a plain insert and no lease lookup: an upsert
# costs about a seventh of a batch of new tasks. Only ``started`` or an end
# without a start (``failed``, ``cancelled``) can follow ``queued``: a
# ``progress`` or ``completed`` event comes from a body that runs, which a
# claim (or an append's own ``started``) made leave the runnable table, so
# those look up nothing there (a third of an append of completions: the
# queue's index holds many dead entries between vacuums).
APPEND = f"""
WITH serialised AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({COMMIT_ORDER_LOCK_KEY})
), inserted AS (
    INSERT INTO {EVENTS_TABLE} (task_id, version, type, at, data)
    SELECT e.task_id, e.version, e.type, e.at, e.data
    FROM serialised, unnest(
        $1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::jsonb[]
    ) AS e(task_id, version, type, at, data)
    RETURNING position, task_id, version, type, data
), last AS (
    SELECT DISTINCT ON (task_id) task_id, version, type, position, data
    FROM inserted ORDER BY task_id, version DESC
), fresh AS (
    INSERT INTO {RUNNABLE_TABLE} (task_id, priority, position, version, attempt)
    SELECT task_id, coalesce((data->>'priority')::bigint, 0), position, version,
        coalesce((data->>'attempt')::int, 1)
    FROM last WHERE type = 'queued' AND version = 1
), requeued AS (
    INSERT INTO {RUNNABLE_TABLE} (task_id, priority, position, version, attempt)
    SELECT task_id, coalesce((data->>'priority')::bigint, 0), position, version,
        coalesce((data->>'attempt')::int, 1)
    FROM last WHERE type = 'queued' AND version > 1
    ON CONFLICT (task_id) DO UPDATE SET priority = excluded.priority,
        position = excluded.position, version = excluded.version,
        attempt = excluded.attempt
), taken AS (
    DELETE FROM {RUNNABLE_TABLE} WHERE task_id = ANY(ARRAY(
        SELECT task_id FROM last WHERE type IN ('started', 'failed', 'cancelled')
    ))
), leased AS (
    INSERT INTO {LEASES_TABLE} (task_id, node_id, attempt)
    SELECT task_id, data->>'node_id', coalesce((data->>'attempt')::int, 1)
    FROM last WHERE type = 'started'
    ON CONFLICT (task_id) DO UPDATE SET node_id = excluded.node_id,
        attempt = excluded.attempt
), released AS (
    DELETE FROM {LEASES_TABLE} WHERE task_id = ANY(ARRAY(
        SELECT task_id FROM last WHERE type NOT IN ('started', 'progress')
            AND (type <> 'queued' OR version > 1)
    ))
)
SELECT array_agg(position ORDER BY position) AS positions,
    pg_notify('{NOTIFY_CHANNEL}', max(position)::text) AS notified,
    (
        SELECT pg_notify('{RUNNABLE_CHANNEL}', '')
        WHERE EXISTS (SELECT FROM last WHERE type = 'queued')
    ) AS runnable
FROM inserted
"""

# Claiming: the runnable rows of the first tasks by (priority, queued
# position) are deleted and their ``started`` events inserted in one
# statement, so a claim is durable before any body runs. The commit-order
# lock is taken first, through a one-time filter evaluated before the scan
# locks any row: an append (which holds that lock) may delete runnable rows,
# and a claim holding row locks while waiting for the lock would deadlock
# with it. The picked rows are deleted by their physical address (ctid),
# which cannot change while this statement holds their row locks: a TID
# scan instead of an index probe per row, an eighth of a claim.
CLAIM = f"""
WITH serialised AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({COMMIT_ORDER_LOCK_KEY})
), picked AS (
    SELECT ctid FROM {RUNNABLE_TABLE}
    WHERE EXISTS (SELECT FROM serialised)
    ORDER BY priority, position LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    DELETE FROM {RUNNABLE_TABLE}
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM picked))
    RETURNING task_id, version, attempt, priority, position
), inserted AS (
    INSERT INTO {EVENTS_TABLE} (task_id, version, type, at, data)
    SELECT task_id, version + 1, 'started', now(),
        jsonb_build_object('attempt', attempt, 'node_id', $2::text)
    FROM claimed ORDER BY priority, position
    RETURNING position, task_id, version, at,
        (data->>'attempt')::int AS attempt
), leased AS (
    INSERT INTO {LEASES_TABLE} (task_id, node_id, attempt)
    SELECT task_id, $2::text, attempt FROM claimed
    ON CONFLICT (task_id) DO UPDATE SET node_id = excluded.node_id,
        attempt = excluded.attempt
), queued AS (
    SELECT * FROM {EVENTS_TABLE}
    WHERE position = ANY(ARRAY(SELECT position FROM claimed))
)
SELECT i.position, i.task_id, i.version, i.at, i.attempt,
    q.position, q.version, q.at, q.data,
    CASE WHEN i.position = max(i.position) OVER ()
        THEN pg_notify('{NOTIFY_CHANNEL}', i.position::text) END
FROM inserted i JOIN queued q ON q.task_id = i.task_id
ORDER BY i.position
"""

_LAST_EVENTS = f"""
    SELECT DISTINCT ON (task_id) task_id, version, type, position, data
    FROM {EVENTS_TABLE} ORDER BY task_id, version DESC
"""

#: Statements that rebuild the cluster's projections from the log, in one
#: transaction (run by revision 0002 and :meth:`rebuild_projections`).
REBUILD_STATEMENTS = (
    f"SELECT pg_advisory_xact_lock({COMMIT_ORDER_LOCK_KEY})",
    f"DELETE FROM {RUNNABLE_TABLE}",
    f"DELETE FROM {LEASES_TABLE}",
    f"""
    INSERT INTO {RUNNABLE_TABLE} (task_id, priority, position, version, attempt)
    SELECT task_id, coalesce((data->>'priority')::bigint, 0), position, version,
        coalesce((data->>'attempt')::int, 1)
    FROM ({_LAST_EVENTS}) last WHERE type = 'queued'
    """,
    f"""
    INSERT INTO {LEASES_TABLE} (task_id, node_id, attempt)
    SELECT s.task_id, s.data->>'node_id', coalesce((s.data->>'attempt')::int, 1)
    FROM ({_LAST_EVENTS}) last
    JOIN (
        SELECT DISTINCT ON (task_id) task_id, data FROM {EVENTS_TABLE}
        WHERE type = 'started' ORDER BY task_id, version DESC
    ) s USING (task_id)
    WHERE last.type IN ('started', 'progress')
    """,
)
_SELECT = f"SELECT position, task_id, version, type, at, data FROM {EVENTS_TABLE}"
READ = f"{_SELECT} WHERE position > $1 ORDER BY position LIMIT $2"
READ_TASK = f"{_SELECT} WHERE task_id = $1 ORDER BY version"
LAST_POSITION = f"SELECT coalesce(max(position), 0) FROM {EVENTS_TABLE}"
