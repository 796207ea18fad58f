"""PostgreSQL itself restarted under a running cluster (named to run last:
it restarts the shared server, and restores it before it returns)."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess

import asyncpg
import pytest
from cluster_helpers import enqueue, last_events, poll

from engine.store.postgres import asyncpg_dsn

pytestmark = pytest.mark.postgres

CLUSTER_VERSIONS = (
    sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
)


def _restart_command() -> list[str]:
    return [
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        CLUSTER_VERSIONS[-1],
        "main",
        "restart",
    ]


def _server_is_up() -> bool:
    return subprocess.run(["pg_isready", "-q"], check=False).returncode == 0


async def _wait_for_server(timeout_s: float) -> None:
    async def up() -> bool:
        return await asyncio.to_thread(_server_is_up)

    await poll(up, timeout_s=timeout_s, every_s=0.2)


async def _terminal_count(url: str) -> int:
    try:
        connection = await asyncpg.connect(asyncpg_dsn(url), timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return 0
    try:
        last = await last_events(connection)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return 0
    finally:
        await connection.close()
    return sum(t in ("completed", "failed", "cancelled") for t, _ in last.values())


@pytest.mark.skipif(
    not CLUSTER_VERSIONS
    or shutil.which("pg_ctlcluster") is None
    or not glob.glob("/etc/postgresql/*/main"),
    reason="pg_ctlcluster and a local 'main' cluster are needed to restart it.",
)
@pytest.mark.timeout(180)
async def test_every_task_reaches_a_terminal_state_across_a_server_restart(
    postgres_url, db, nodes
):
    await nodes.start("a", max_workers=10)
    await nodes.start("b", max_workers=10)
    specs = [
        {
            "id": f"s{i}",
            "data": {"task_type": "sleepy", "priority": 0, "args": [f"s{i}", 0.05]},
        }
        for i in range(600)
    ]
    await enqueue(postgres_url, specs)
    await poll(lambda: _some_done(db), timeout_s=30)

    try:
        restarted = await asyncio.to_thread(
            subprocess.run, _restart_command(), check=False, capture_output=True
        )
    finally:
        await _wait_for_server(60)
    assert restarted.returncode == 0, restarted.stderr

    async def all_terminal() -> bool:
        return await _terminal_count(postgres_url) == 600

    await poll(all_terminal, timeout_s=120, every_s=0.5)
    await nodes.stop("a")
    await nodes.stop("b")

    count = await _terminal_count(postgres_url)
    assert count == 600


async def _some_done(db) -> bool:
    return await db.fetchval("SELECT count(*) FROM side_effects") >= 50
