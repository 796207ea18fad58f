"""Helpers of the HTTP API tests: a real server, an SSE reader, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import uvicorn


async def eventually(
    predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` holds, checking at every loop iteration.

    For state that changes on the server's side of a socket (a released
    subscription), where no event can be awaited from the test.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"Timed out waiting for {what}.")
        await asyncio.sleep(0.005)


class LiveServer:
    """A uvicorn server on 127.0.0.1 serving an app in this event loop."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        # Listening before uvicorn starts: early connections wait in the
        # backlog, so no test needs to wait for the server to come up.
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=1,
            ws="websockets-sansio",
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        assert self._task is not None
        await self._task
        self.sock.close()


class SSEReader:
    """Reads one SSE response event by event (blank-line separated blocks)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def block(self) -> list[str]:
        """The lines of the next event or comment block."""
        lines: list[str] = []
        async for line in self._lines:
            if line == "":
                if lines:
                    return lines
                continue
            lines.append(line)
        raise AssertionError(f"The stream ended; last lines {lines!r}.")

    async def opened(self) -> None:
        """Wait for the ``retry:`` block the server sends once subscribed."""
        lines = await self.block()
        assert lines[0].startswith("retry:"), lines

    async def event(self) -> tuple[int | None, dict[str, Any]]:
        """The next event as ``(id, data)``, skipping keep-alive comments."""
        while True:
            lines = await self.block()
            if all(line.startswith(":") for line in lines):
                continue
            fields = dict(line.split(": ", 1) for line in lines if ": " in line)
            event_id = int(fields["id"]) if "id" in fields else None
            return event_id, json.loads(fields["data"])

    async def events_until(
        self, stop: Callable[[dict[str, Any]], bool]
    ) -> list[tuple[int | None, dict[str, Any]]]:
        """Events up to and including the first one ``stop`` accepts."""
        received = []
        while True:
            item = await self.event()
            received.append(item)
            if stop(item[1]):
                return received


@contextlib.asynccontextmanager
async def sse(
    base_url: str, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[SSEReader]:
    """Open an SSE stream and yield a reader once the server subscribed it."""
    timeout = httpx.Timeout(10.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as http:
        async with http.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            reader = SSEReader(response)
            await reader.opened()
            yield reader


async def connect_and_drop(port: int, index: int, group_id: str = "g") -> None:
    """Open ``/events`` on a raw socket and reset the connection.

    Two clients in three wait until the server subscribed them; the rest
    drop before the answer's first bytes.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /events?group_id={group_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    if index % 3:
        await reader.readuntil(b"retry:")
    # Abort: a reset, as a crashed client or a dropped network gives.
    writer.transport.abort()


def terminal(event: dict[str, Any]) -> bool:
    """True for a task's last event."""
    return event.get("type") in {"completed", "failed", "cancelled"}
