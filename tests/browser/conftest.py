"""Fixtures of the browser tests: Debian's chromium driven by Playwright, and
the ``taskengine serve`` app on a free port of 127.0.0.1.

Playwright never downloads a browser here: it launches /usr/bin/chromium.
Without it the tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

import engine.examples  # noqa: F401 - registers the demonstration task types
from engine import AsyncTaskWorker
from engine.serve import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-token"


@pytest.fixture
def chromium_path() -> Path:
    """Debian's chromium; skips when missing, and fails under ``CI=true``."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium."
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[object]:
    """A headless chromium launched by Playwright from ``chromium_path``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def server_url(tmp_path) -> AsyncIterator[str]:
    """The dashboard's URL (with the token) on a served SQLite-backed worker."""
    worker = AsyncTaskWorker(
        max_workers=4, store=f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}"
    )
    app = create_app(worker, token=TOKEN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=1, ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}/?token={TOKEN}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


@pytest.fixture
def artifacts() -> Path:
    """The folder for screenshots (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
