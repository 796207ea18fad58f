"""Request and response models of the HTTP API (they also feed OpenAPI)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "HealthResponse",
    "TaskEventResponse",
    "TaskEventsResponse",
    "TaskListResponse",
    "TaskRequest",
    "TaskResponse",
    "TaskTypesResponse",
]


class TaskRequest(BaseModel):
    """The body of ``POST /tasks``: a registered task type and its arguments."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    task_id: str | None = Field(default=None, min_length=1)
    metadata: dict[str, Any] | None = None
    timeout: float | None = None
    use_cache: bool | None = None
    cache_ttl: int | None = None


class TaskResponse(BaseModel):
    """A task as the API shows it; times are ISO 8601 in UTC."""

    id: str
    status: str
    progress: float
    metadata: dict[str, Any]
    result: Any = None
    error: str | None = None
    from_cache: bool = False
    task_type: str | None = None
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    priority: int = 0
    attempt: int = 1
    error_type: str | None = None
    version: int


class TaskListResponse(BaseModel):
    """``GET /tasks``: tasks newest first and how many were returned."""

    tasks: list[TaskResponse]
    count: int


class TaskTypesResponse(BaseModel):
    """The registered task types, sorted."""

    task_types: list[str]


class TaskEventResponse(BaseModel):
    """One event of a task as stored in the log."""

    position: int | None
    task_id: str
    version: int
    type: str
    at: str
    data: dict[str, Any]


class TaskEventsResponse(BaseModel):
    """``GET /tasks/{task_id}/events``: the task's events in version order."""

    task_id: str
    events: list[TaskEventResponse]
    count: int


class HealthResponse(BaseModel):
    """``GET /health``."""

    status: str
    worker_count: int
    queue_size: int
