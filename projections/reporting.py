"""SQL reports over the log, portable between SQLite and PostgreSQL.

These are the queries ``taskengine report`` prints, and examples for people
writing their own: the log is one table, ``task_events``, and a task's state
is its last non-progress event. Imports nothing of the runtime; the table
name comes from :mod:`engine.constants`, a leaf module.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from engine.constants import EVENTS_TABLE as T

__all__ = ["REPORTS", "run_reports"]

Report = tuple[str, list[str], list[tuple[Any, ...]]]


def _json_text(dialect: str, column: str, key: str) -> str:
    if dialect == "postgresql":
        return f"{column}->>'{key}'"
    return f"json_extract({column}, '$.{key}')"


def _seconds(dialect: str, start: str, end: str) -> str:
    if dialect == "postgresql":
        return f"extract(epoch from ({end} - {start}))"
    return f"(julianday({end}) - julianday({start})) * 86400.0"


def _last_state(dialect: str) -> str:
    return f"""
        SELECT e.task_id, e.type FROM {T} e
        JOIN (SELECT task_id, max(version) AS version FROM {T}
              WHERE type <> 'progress' GROUP BY task_id) last
          ON last.task_id = e.task_id AND last.version = e.version
    """


def _queued(dialect: str) -> str:
    task_type = _json_text(dialect, "data", "task_type")
    return f"SELECT task_id, {task_type} AS task_type FROM {T} WHERE version = 1"


def _reports(dialect: str) -> list[tuple[str, str]]:
    seconds = _seconds(dialect, "s.at", "c.at")
    error_type = _json_text(dialect, "data", "error_type")
    from_cache = _json_text(dialect, "data", "from_cache")
    return [
        (
            "Events by type",
            f"SELECT type, count(*) AS events FROM {T} GROUP BY type ORDER BY type",
        ),
        (
            "Tasks by state (last non-progress event)",
            f"SELECT type AS state, count(*) AS tasks FROM ({_last_state(dialect)}) s "
            "GROUP BY type ORDER BY type",
        ),
        (
            "Run time of completed tasks by task type (seconds)",
            f"""
            SELECT q.task_type, count(*) AS runs,
                   round(avg({seconds}), 4) AS mean_s,
                   round(max({seconds}), 4) AS max_s
            FROM {T} c
            JOIN {T} s ON s.task_id = c.task_id AND s.type = 'started'
             AND s.version = (SELECT max(version) FROM {T} x
                              WHERE x.task_id = c.task_id AND x.type = 'started')
            JOIN ({_queued(dialect)}) q ON q.task_id = c.task_id
            WHERE c.type = 'completed'
            GROUP BY q.task_type ORDER BY runs DESC
            """,
        ),
        (
            "Failures by error type",
            f"SELECT {error_type} AS error_type, count(*) AS failures FROM {T} "
            "WHERE type = 'failed' GROUP BY 1 ORDER BY failures DESC",
        ),
        (
            "Cache hits versus runs",
            f"SELECT CASE WHEN {from_cache} IN ('true', '1') THEN 'cache hit' "
            "ELSE 'ran' END AS outcome, count(*) AS tasks "
            f"FROM {T} WHERE type = 'completed' GROUP BY 1 ORDER BY 1",
        ),
    ]


#: Report titles, in the order ``run_reports`` returns them.
REPORTS = [title for title, _ in _reports("sqlite")]


async def run_reports(url: str) -> list[Report]:
    """Run every report against the log at ``url``."""
    from engine.store.urls import async_url

    engine = create_async_engine(async_url(url), poolclass=sa.pool.NullPool)
    results: list[Report] = []
    try:
        async with engine.connect() as connection:
            dialect = connection.dialect.name
            for title, sql in _reports(dialect):
                result = await connection.execute(sa.text(sql))
                results.append((title, list(result.keys()), list(result.fetchall())))
    finally:
        await engine.dispose()
    return results
