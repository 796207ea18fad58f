"""The bearer token of ``taskengine serve``: every endpoint, streams too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from api_support import LiveServer, sse
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from engine.serve import create_app

TOKEN = "s3cret-token"


@pytest.fixture
async def guarded(worker) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(worker, token=TOKEN, manage_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    detail = response.json()["detail"]
    assert detail["error_type"] == "unauthorized"
    assert detail["message"].endswith(".")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/tasks"),
        ("POST", "/tasks"),
        ("GET", "/tasks/x"),
        ("DELETE", "/tasks/x"),
        ("GET", "/tasks/types"),
        ("GET", "/types"),
        ("GET", "/tasks/x/events"),
        ("GET", "/events"),
        ("GET", "/health"),
        ("GET", "/docs"),
    ],
)
async def test_every_endpoint_needs_the_token(guarded, method, path):
    missing = await guarded.request(method, path)
    wrong = await guarded.request(
        method, path, headers={"Authorization": "Bearer wrong"}
    )

    assert_unauthorized(missing)
    assert_unauthorized(wrong)
    assert "requires an API token" in missing.json()["detail"]["message"]
    assert "not valid" in wrong.json()["detail"]["message"]


async def test_right_token_in_header_or_query_is_accepted(guarded):
    by_header = await guarded.get(
        "/health", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    by_query = await guarded.get("/health", params={"token": TOKEN})

    assert by_header.status_code == 200
    assert by_query.status_code == 200


async def test_dashboard_shell_is_served_without_token(guarded):
    page = await guarded.get("/")
    script = await guarded.get("/app.js")

    assert page.status_code == 200
    assert "<title>taskengine</title>" in page.text
    assert script.status_code == 200


async def test_sse_accepts_the_token_as_query_parameter(worker):
    app = create_app(worker, token=TOKEN, manage_worker=False)
    async with LiveServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            refused = await http.get("/events")
        async with sse(server.url, f"/events?group_id=g&token={TOKEN}") as stream:
            task_id = await worker.add_task("echo", metadata={"group_id": "g"})
            _, first = await stream.event()

    assert_unauthorized(refused)
    assert first["task_id"] == task_id


async def test_websocket_needs_the_token(worker):
    app = create_app(worker, token=TOKEN, manage_worker=False)
    async with LiveServer(app) as server:
        base = server.url.replace("http", "ws") + "/ws/tasks/g"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base):
                pass
        async with connect(f"{base}?token={TOKEN}") as websocket:
            hello = json.loads(await websocket.recv())

    assert refused.value.response.status_code == 401
    body = json.loads(refused.value.response.body)
    assert body["detail"]["error_type"] == "unauthorized"
    assert hello["type"] == "subscribed"
