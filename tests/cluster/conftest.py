"""Fixtures of the cluster tests: node processes on one database, the
side-effect tables their tasks write to, and bounded polls of the log."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.store.postgres import asyncpg_dsn

NODE_SCRIPT = Path(__file__).with_name("node_script.py")
REPO_ROOT = Path(__file__).resolve().parents[2]

SIDE_TABLES = """
CREATE TABLE side_effects (key text PRIMARY KEY, runs int NOT NULL, node_id text);
CREATE TABLE side_starts (key text NOT NULL, node_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    seq bigserial PRIMARY KEY);
"""


class Nodes:
    """Node processes (``node_script.py``) sharing one database."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, node_id: str, max_workers: int = 10) -> None:
        """Start a node and wait until it has joined."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE_SCRIPT),
            self.url,
            node_id,
            str(max_workers),
            cwd=REPO_ROOT,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.processes[node_id] = process
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line == b"ready\n", line

    async def stop(self, node_id: str) -> None:
        """Ask a node to stop and wait for it to exit cleanly."""
        process = self.processes[node_id]
        out, _ = await asyncio.wait_for(process.communicate(b"stop\n"), 30)
        assert process.returncode == 0
        assert out.endswith(b"stopped\n")

    def kill(self, node_id: str) -> None:
        """SIGKILL a node."""
        self.processes[node_id].send_signal(signal.SIGKILL)

    async def close(self) -> None:
        """Kill nodes that are still running (after a failed test)."""
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database, with the side-effect tables."""
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    await connection.execute(SIDE_TABLES)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def nodes(postgres_url: str, db: asyncpg.Connection) -> AsyncIterator[Nodes]:
    """Node processes with a short heartbeat (0.3 s) and lease (2 s)."""
    env = {**os.environ, "TASKENGINE_HEARTBEAT_S": "0.3", "TASKENGINE_LEASE_S": "2"}
    pool = Nodes(postgres_url, env)
    try:
        yield pool
    finally:
        await pool.close()
