"""Fixtures of the PostgreSQL tests: an open store, writer processes, and a
way to await a log record by its ``action``."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.store.postgres import PostgresEventStore

WRITER_SCRIPT = Path(__file__).with_name("append_writer.py")


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[PostgresEventStore]:
    """An open PostgreSQL store on a fresh database at head."""
    store = PostgresEventStore(postgres_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class ActionWaiter(logging.Handler):
    """A log handler that lets a test await the next record of an action."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []
        self._waiters: dict[str, list[asyncio.Future[logging.LogRecord]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        action = getattr(record, "action", None)
        if action is None:
            return
        self.seen.append(action)
        for future in self._waiters.pop(action, []):
            if not future.done():
                future.set_result(record)

    def next(self, action: str) -> asyncio.Future[logging.LogRecord]:
        """A future resolved by the next record with ``action``."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(action, []).append(future)
        return future


@pytest.fixture
def actions() -> Iterator[ActionWaiter]:
    """Records of the ``engine`` loggers, awaitable by action."""
    handler = ActionWaiter()
    logger = logging.getLogger("engine")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class Writers:
    """Writer processes appending to one database (``append_writer.py``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, count: int, batches: int, max_batch: int) -> None:
        """Start ``count`` writers and wait until each is connected."""
        for n in range(count):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WRITER_SCRIPT),
                self.url,
                f"w{n}",
                str(batches),
                str(max_batch),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.processes.append(process)
        for process in self.processes:
            assert process.stdout is not None
            assert await process.stdout.readline() == b"ready\n"

    def release(self) -> None:
        """Let every writer start appending at once."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")

    async def finish(self) -> int:
        """Wait for the writers; return how many events they wrote together."""
        written = 0
        for process in self.processes:
            out, _ = await process.communicate()
            assert process.returncode == 0
            written += int(out.split()[-1])
        return written

    async def kill(self) -> None:
        """End writers that are still running (after a failed test)."""
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.fixture
async def writers(postgres_url: str) -> AsyncIterator[Writers]:
    """Writer processes on the test's database, killed if left running."""
    pool = Writers(postgres_url)
    try:
        yield pool
    finally:
        await pool.kill()
