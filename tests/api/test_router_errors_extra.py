"""Task ids the HTTP routes could not address are refused at POST."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from engine import AsyncTaskWorker, task
from engine.api import create_task_worker_router, install_error_handlers


@task("api_extra_echo")
async def api_extra_echo(value=1):
    return value


@pytest.fixture
async def client():
    worker = AsyncTaskWorker()
    await worker.start()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(create_task_worker_router(worker))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c
    await worker.stop()


@pytest.mark.parametrize("task_id", ["a/b", "types"])
async def test_post_refuses_task_ids_the_routes_cannot_address(client, task_id):
    response = await client.post(
        "/tasks", json={"task_type": "api_extra_echo", "task_id": task_id}
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["error_type"] == "invalid_task_id"
    assert task_id in detail["message"]
