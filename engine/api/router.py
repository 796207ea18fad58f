"""``create_task_worker_router``: the HTTP endpoints of API.md.

Reads answer from the worker's in-memory projection; ``/tasks/{id}/events``
and resumed streams read the log. Every error the router raises already
carries the API's error body (:mod:`engine.api.errors`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, WebSocket
from fastapi.params import Depends
from fastapi.responses import JSONResponse

from engine.api.errors import api_error, http_error_for
from engine.api.models import (
    HealthResponse,
    TaskEventsResponse,
    TaskListResponse,
    TaskRequest,
    TaskResponse,
    TaskTypesResponse,
)
from engine.api.params import check_params
from engine.api.render import event_body, task_body
from engine.api.sse import event_source_response
from engine.api.stream import parse_last_event_id
from engine.api.ws import deny_websocket, serve_websocket
from engine.exceptions import TaskEngineError, UsageError
from engine.registry import get_all_task_types, get_task_function
from projections.task_info import TaskStatus

__all__ = ["create_task_worker_router"]

SSE_PING_INTERVAL_S = 15.0
_STATUS_CODES = {("/tasks", "POST"): 201, ("/tasks/{task_id}", "DELETE"): 204}
_STATUS_VALUES = ", ".join(repr(s.value) for s in TaskStatus)


def _not_found(task_id: str) -> Exception:
    return api_error(
        404,
        f"No task with id {task_id!r} exists.",
        "task_not_found",
        task_id=task_id,
    )


def _check_addressable(task_id: str | None) -> None:
    # An id the task routes could not address is refused at the door: a "/"
    # splits the path, and "types" is the path of the task types.
    if task_id is not None and ("/" in task_id or task_id == "types"):
        raise api_error(
            422,
            f"Task id {task_id!r} cannot be used over HTTP: ids must not contain "
            "'/' or be 'types'. Pick another id, or omit it for a fresh one.",
            "invalid_task_id",
            task_id=task_id,
        )


def _statuses(raw: str | None) -> list[TaskStatus] | None:
    if raw is None or not raw.strip():
        return None
    wanted = []
    for value in raw.split(","):
        try:
            wanted.append(TaskStatus(value.strip().lower()))
        except ValueError:
            raise api_error(
                422,
                f"Unknown task status {value.strip()!r}; use one of "
                f"{_STATUS_VALUES}, or several separated by commas.",
                "invalid_status",
                status=value.strip(),
            ) from None
    return wanted


def _after(raw: str | None) -> int | None:
    try:
        return parse_last_event_id(raw)
    except UsageError as exc:
        raise api_error(400, exc.message, "invalid_last_event_id") from None


class _Endpoints:
    """The endpoint functions, bound to one worker."""

    def __init__(self, worker: Any, sse_ping_interval_s: float) -> None:
        self.worker = worker
        self.ping_s = sse_ping_interval_s

    def info_or_404(self, task_id: str) -> Any:
        info = self.worker.get_task_info(task_id)
        if info is None:
            raise _not_found(task_id)
        return info

    async def submit(self, request: TaskRequest) -> JSONResponse:
        func = get_task_function(request.task_type)
        if func is None:
            known = ", ".join(map(repr, get_all_task_types())) or "none"
            raise api_error(
                400,
                f"No task type {request.task_type!r} is registered "
                f"(registered: {known}).",
                "unknown_task_type",
                task_type=request.task_type,
            )
        check_params(request.task_type, func, request.params)
        _check_addressable(request.task_id)
        try:
            task_id = await self.worker.add_task(
                request.task_type,
                priority=request.priority,
                task_id=request.task_id,
                metadata=request.metadata,
                timeout=request.timeout,
                use_cache=request.use_cache,
                cache_ttl=request.cache_ttl,
                **request.params,
            )
        except TaskEngineError as exc:
            raise http_error_for(exc) from exc
        return JSONResponse(task_body(self.info_or_404(task_id)), status_code=201)

    async def get_task(self, task_id: str) -> JSONResponse:
        return JSONResponse(task_body(self.info_or_404(task_id)))

    async def cancel(self, task_id: str) -> Response:
        info = self.info_or_404(task_id)
        if not info.finished and await self.worker.cancel_task(task_id):
            return Response(status_code=204)
        status = self.worker.get_task_info(task_id).status.value
        raise api_error(
            409,
            f"Task {task_id!r} already finished as {status}; only pending or "
            "running tasks can be cancelled.",
            "task_already_finished",
            task_id=task_id,
            status=status,
        )

    async def list_tasks(
        self,
        status: Annotated[str | None, Query()] = None,
        limit: Annotated[int | None, Query(ge=0)] = None,
        older_than_minutes: Annotated[float | None, Query(ge=0, le=1e12)] = None,
    ) -> JSONResponse:
        older_than = (
            None
            if older_than_minutes is None
            else dt.timedelta(minutes=older_than_minutes)
        )
        infos = self.worker.get_all_tasks(
            status=_statuses(status), limit=limit, older_than=older_than
        )
        tasks = [task_body(info) for info in infos]
        return JSONResponse({"tasks": tasks, "count": len(tasks)})

    async def task_types(self) -> dict[str, list[str]]:
        return {"task_types": get_all_task_types()}

    async def task_events(self, task_id: str) -> JSONResponse:
        try:
            events = await self.worker.history(task_id)
        except TaskEngineError as exc:
            raise http_error_for(exc) from exc
        body = [event_body(event) for event in events]
        return JSONResponse({"task_id": task_id, "events": body, "count": len(body)})

    async def events(
        self,
        request: Request,
        group_id: str | None = None,
        task_id: str | None = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        raw = last_event_id or request.query_params.get("last_event_id")
        return event_source_response(
            self.worker,
            group_id=group_id,
            task_id=task_id,
            after=_after(raw),
            ping_interval_s=self.ping_s,
        )

    async def websocket(
        self,
        websocket: WebSocket,
        group_id: str,
        task_id: str | None = None,
        last_event_id: str | None = None,
    ) -> None:
        try:
            after = parse_last_event_id(last_event_id)
        except UsageError as exc:
            await deny_websocket(websocket, 400, exc.message, "invalid_last_event_id")
            return
        await serve_websocket(
            websocket, self.worker, group_id=group_id, task_id=task_id, after=after
        )

    async def health(self) -> dict[str, Any]:
        worker = self.worker
        return {
            "status": "ok" if worker.running else "stopped",
            "worker_count": worker.max_workers,
            "queue_size": _queue_size(worker),
        }


def _queue_size(worker: Any) -> int:
    size = getattr(worker, "queue_size", None)
    if isinstance(size, int):
        return size
    return len(worker._queue)


def create_task_worker_router(
    worker: Any,
    prefix: str = "",
    tags: list[str | Enum] | None = None,
    dependencies: Sequence[Depends] | None = None,
    *,
    sse_ping_interval: float = SSE_PING_INTERVAL_S,
) -> APIRouter:
    """A FastAPI router exposing ``worker`` over HTTP, SSE and WebSocket.

    Args:
        worker: The :class:`~engine.worker.AsyncTaskWorker` to expose.
        prefix: Prepended to every path, such as ``"/api/v1"``.
        tags: OpenAPI tags of every route (default ``["tasks"]``).
        dependencies: FastAPI dependencies run for every route, such as an
            authentication check.
        sse_ping_interval: Seconds between keep-alive comments on an idle
            ``/events`` stream.

    Returns:
        The router; include it with ``app.include_router(router)`` and call
        :func:`~engine.api.install_error_handlers` on the app.
    """
    ep = _Endpoints(worker, sse_ping_interval)
    router = APIRouter(
        prefix=prefix,
        tags=tags if tags is not None else ["tasks"],
        dependencies=list(dependencies or ()),
    )
    routes: list[tuple[str, Any, str, Any, str]] = [
        ("/tasks", ep.submit, "POST", TaskResponse, "Submit a task"),
        ("/tasks/types", ep.task_types, "GET", TaskTypesResponse, "Task types"),
        ("/types", ep.task_types, "GET", TaskTypesResponse, "Task types"),
        ("/tasks", ep.list_tasks, "GET", TaskListResponse, "Tasks, newest first"),
        ("/tasks/{task_id}", ep.get_task, "GET", TaskResponse, "One task"),
        ("/tasks/{task_id}", ep.cancel, "DELETE", None, "Cancel a task"),
        ("/tasks/{task_id}/events", ep.task_events, "GET", TaskEventsResponse,
         "A task's events from the log"),
        ("/events", ep.events, "GET", None, "Task events as Server-Sent Events"),
        ("/health", ep.health, "GET", HealthResponse, "Worker health"),
    ]  # fmt: skip
    for path, endpoint, method, model, summary in routes:
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            status_code=_STATUS_CODES.get((path, method)),
            response_model=model,
            response_class=JSONResponse if model is not None else Response,
            summary=summary,
        )
    router.add_api_websocket_route("/ws/tasks/{group_id}", ep.websocket)
    return router
