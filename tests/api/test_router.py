"""The REST endpoints: status codes, bodies and the error shape."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest
from fastapi import FastAPI

from engine import AsyncTaskWorker, register_task
from engine.api import create_task_worker_router

TASK_FIELDS = {
    "id", "status", "progress", "metadata", "result", "error", "from_cache",
    "task_type", "created_at", "started_at", "completed_at", "priority",
    "attempt", "error_type", "version",
}  # fmt: skip


class Opaque:
    """A result no JSON encoder knows."""

    def __repr__(self) -> str:
        return "Opaque()"


async def opaque_result() -> Opaque:
    return Opaque()


async def nan_result() -> dict[str, float]:
    return {"value": math.nan}


async def positional_only(a: int, /) -> int:
    return a


register_task("api_test_opaque", opaque_result)
register_task("api_test_nan", nan_result)
register_task("api_test_positional", positional_only)


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["error_type"] == error_type
    message = detail["message"]
    assert message.endswith(".") and " " in message, message
    assert "Traceback" not in message
    return detail


async def submit(client: httpx.AsyncClient, task_type: str, **body) -> dict:
    response = await client.post("/tasks", json={"task_type": task_type, **body})
    assert response.status_code == 201, response.text
    return response.json()


async def test_post_task_returns_201_with_every_task_field(client, worker):
    response = await client.post(
        "/tasks",
        json={
            "task_type": "add",
            "params": {"a": 1, "b": 2},
            "priority": 3,
            "task_id": "t-add",
            "metadata": {"group_id": "g"},
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == TASK_FIELDS
    assert body["id"] == "t-add"
    assert body["task_type"] == "add"
    assert body["priority"] == 3
    assert body["metadata"] == {"group_id": "g"}
    assert await worker.wait_for_tasks(["t-add"], timeout=5) == [3]


async def test_post_unknown_task_type_is_400(client):
    response = await client.post("/tasks", json={"task_type": "no-such-type"})

    detail = assert_error(response, 400, "unknown_task_type")
    assert "no-such-type" in detail["message"]


@pytest.mark.parametrize(
    ("task_type", "params", "parameter"),
    [
        ("add", {"a": 1, "b": 2, "c": 3}, "c"),
        ("add", {"a": 1}, "b"),
        ("add", {"a": 1, "b": 2, "priority": 1}, "priority"),
        ("sleep", {"progress_callback": 1}, "progress_callback"),
        ("echo", {"cache_key_fn": "x"}, "cache_key_fn"),
        ("api_test_positional", {"a": 1}, "a"),
    ],
)
async def test_post_bad_params_is_422_naming_the_parameter(
    client, task_type, params, parameter
):
    response = await client.post(
        "/tasks", json={"task_type": task_type, "params": params}
    )

    detail = assert_error(response, 422, "invalid_params")
    assert detail["parameter"] == parameter
    assert repr(parameter) in detail["message"]


async def test_post_duplicate_task_id_is_409(client):
    await submit(client, "echo", task_id="dup")

    response = await client.post("/tasks", json={"task_type": "echo", "task_id": "dup"})

    assert_error(response, 409, "duplicate_task_id")


async def test_post_bad_timeout_is_422(client):
    response = await client.post("/tasks", json={"task_type": "echo", "timeout": -1})

    assert_error(response, 422, "invalid_timeout")


@pytest.mark.parametrize(
    "content",
    [b'{"task_type": "echo",', b"not json", b"[1, 2]", b'{"params": {}}'],
)
async def test_malformed_body_is_422_in_the_error_shape(client, content):
    response = await client.post(
        "/tasks", content=content, headers={"Content-Type": "application/json"}
    )

    detail = assert_error(response, 422, "invalid_request")
    assert detail["errors"]


async def test_get_task_is_200_then_404_for_unknown(client):
    task = await submit(client, "echo", params={"value": "hi"})

    found = await client.get(f"/tasks/{task['id']}")
    missing = await client.get("/tasks/nope")

    assert found.status_code == 200
    assert found.json()["id"] == task["id"]
    assert_error(missing, 404, "task_not_found")


async def test_delete_cancels_pending_or_running_task_with_204(client, worker):
    task = await submit(client, "sleep", params={"seconds": 30})

    response = await client.delete(f"/tasks/{task['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert worker.get_task_info(task["id"]).status == "cancelled"


async def test_delete_unknown_is_404_and_finished_is_409(client, worker):
    task = await submit(client, "echo", params={"value": 1})
    await worker.wait_for_tasks([task["id"]], timeout=5)

    finished = await client.delete(f"/tasks/{task['id']}")
    unknown = await client.delete("/tasks/nope")

    detail = assert_error(finished, 409, "task_already_finished")
    assert detail["status"] == "completed"
    assert_error(unknown, 404, "task_not_found")


async def test_list_tasks_newest_first_with_filters(client, worker):
    ids = [(await submit(client, "echo", params={"value": i}))["id"] for i in range(3)]
    await worker.wait_for_tasks(ids, timeout=5)
    slow = await submit(client, "sleep", params={"seconds": 30})

    everything = (await client.get("/tasks")).json()
    limited = (await client.get("/tasks", params={"limit": 2})).json()
    done = (await client.get("/tasks", params={"status": "completed"})).json()
    several = (
        await client.get("/tasks", params={"status": "completed,pending,running"})
    ).json()
    old = (await client.get("/tasks", params={"older_than_minutes": 60})).json()
    ancient = await client.get("/tasks", params={"older_than_minutes": 1e12})
    endless = await client.get("/tasks", params={"older_than_minutes": "inf"})

    assert [t["id"] for t in everything["tasks"]] == [slow["id"], *reversed(ids)]
    assert everything["count"] == 4
    assert [t["id"] for t in limited["tasks"]] == [slow["id"], ids[2]]
    assert {t["id"] for t in done["tasks"]} == set(ids)
    assert several["count"] == 4
    assert old == {"tasks": [], "count": 0}
    assert ancient.json() == {"tasks": [], "count": 0}
    assert endless.status_code == 422


async def test_list_tasks_with_unknown_status_is_422_with_a_sentence(client):
    response = await client.get("/tasks", params={"status": "finished"})

    detail = assert_error(response, 422, "invalid_status")
    assert "'finished'" in detail["message"]


async def test_list_tasks_with_negative_limit_is_422(client):
    response = await client.get("/tasks", params={"limit": -1})

    assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize("path", ["/tasks/types", "/types"])
async def test_task_types_lists_registered_types(client, path):
    response = await client.get(path)

    assert response.status_code == 200
    assert {"sleep", "add", "fail", "echo"} <= set(response.json()["task_types"])


async def test_task_events_reads_the_log_in_version_order(client, worker):
    task = await submit(client, "fail", params={"message": "Boom."})
    # RuntimeError while the worker holds the task, TaskFailedError after.
    with pytest.raises(Exception, match="Boom"):
        await worker.wait_for_tasks([task["id"]], timeout=5)

    response = await client.get(f"/tasks/{task['id']}/events")
    missing = await client.get("/tasks/nope/events")

    body = response.json()
    assert response.status_code == 200
    assert [e["type"] for e in body["events"]] == ["queued", "started", "failed"]
    assert [e["version"] for e in body["events"]] == [1, 2, 3]
    assert body["events"][-1]["data"]["error"] == "Boom."
    assert body["count"] == 3
    assert_error(missing, 404, "task_not_found")


async def test_health_reports_workers_and_queue(client, worker):
    response = await client.get("/health")

    assert response.json() == {
        "status": "ok",
        "worker_count": worker.max_workers,
        "queue_size": 0,
    }


async def test_results_json_lacks_are_rendered_never_500(client, worker):
    opaque = await submit(client, "api_test_opaque")
    nan = await submit(client, "api_test_nan")
    await worker.wait_for_tasks([opaque["id"], nan["id"]], timeout=5)

    opaque_body = (await client.get(f"/tasks/{opaque['id']}")).json()
    nan_body = (await client.get(f"/tasks/{nan['id']}")).json()

    assert opaque_body["result"] == {"$repr": "Opaque()"}
    assert nan_body["result"] == {"value": {"$te": ["f", "nan"]}}


async def test_unknown_route_is_404_in_the_error_shape(client):
    response = await client.get("/no/such/route")

    assert_error(response, 404, "not_found")


async def test_worker_not_started_is_503():
    worker = AsyncTaskWorker()
    app = FastAPI()
    app.include_router(create_task_worker_router(worker))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.post("/tasks", json={"task_type": "echo"})

    assert_error(response, 503, "worker_not_started")


async def test_router_errors_have_the_shape_without_app_handlers(worker):
    app = FastAPI()
    app.include_router(create_task_worker_router(worker, prefix="/api/v1"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/api/v1/tasks/nope")

    assert_error(response, 404, "task_not_found")


async def test_concurrent_submissions_each_get_201(client, worker):
    responses = await asyncio.gather(
        *(client.post("/tasks", json={"task_type": "echo"}) for _ in range(50))
    )

    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 50
