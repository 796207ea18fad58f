"""Redis fixtures: the shared server on 6379 and private servers for outages.

Tests isolate themselves with a unique key prefix and delete only their own
keys. Under ``CI=true`` a missing Redis fails the test instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis_support import REDIS_URL

IN_CI = os.environ.get("CI") == "true"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"Redis is required under CI=true: {reason}")
    pytest.skip(f"Redis is not available: {reason}")


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    """A client of the shared test Redis (skipped locally when it is down)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        await client.aclose()
        _unavailable(f"{REDIS_URL} did not answer PING ({exc!r})")
    yield client
    await client.aclose()


@pytest.fixture
async def key_prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"taskengine-test:{uuid.uuid4().hex}:"
    yield prefix
    names = [name async for name in redis_client.scan_iter(match=prefix + "*")]
    if names:
        await redis_client.unlink(*names)


class PrivateRedis:
    """A redis-server this test starts, kills and restarts on one port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited.")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start.")

    def stop(self) -> None:
        """Kill the server by its pid and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private, started redis-server on a free 127.0.0.1 port."""
    if shutil.which("redis-server") is None:
        _unavailable("the redis-server binary is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
