"""taskengine: an event-sourced asynchronous task engine.

Every task transition is an event in a log (memory, SQLite or PostgreSQL);
``TaskInfo`` is a projection folded from it. The public names of the
``async-task-worker`` package are importable from here.
"""

from __future__ import annotations

from engine.bus import EventManager, EventSubscription, GroupFilter, event_manager
from engine.events import EventType, TaskEvent, decode_payload, encode_payload
from engine.exceptions import (
    CacheError,
    ConcurrencyConflictError,
    DuplicateTaskIdError,
    InvalidTimeoutError,
    NotAsyncTaskError,
    PayloadEncodingError,
    SchemaVersionError,
    StateError,
    StoreError,
    StoreUnavailableError,
    TaskAlreadyFinishedError,
    TaskEngineError,
    TaskFailedError,
    TaskNotFoundError,
    UnknownTaskTypeError,
    UsageError,
    WorkerNotStartedError,
)
from engine.registry import get_all_task_types, get_task_function, register_task, task
from engine.store import EventStore, MemoryEventStore, make_store

__version__ = "0.1.0"

__all__ = [
    "AsyncTaskWorker",
    "CacheError",
    "ConcurrencyConflictError",
    "DuplicateTaskIdError",
    "EventManager",
    "EventStore",
    "EventSubscription",
    "EventType",
    "GroupFilter",
    "InvalidTimeoutError",
    "MemoryEventStore",
    "NotAsyncTaskError",
    "PayloadEncodingError",
    "SchemaVersionError",
    "StateError",
    "StoreError",
    "StoreUnavailableError",
    "TaskAlreadyFinishedError",
    "TaskEngineError",
    "TaskEvent",
    "TaskFailedError",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskStatus",
    "UnknownTaskTypeError",
    "UsageError",
    "WorkerNotStartedError",
    "decode_payload",
    "encode_payload",
    "event_manager",
    "get_all_task_types",
    "get_task_function",
    "make_store",
    "register_task",
    "task",
]


_LAZY = {
    "AsyncTaskWorker": ("engine.worker", "AsyncTaskWorker"),
    "TaskInfo": ("projections.task_info", "TaskInfo"),
    "TaskStatus": ("projections.task_info", "TaskStatus"),
}


def __getattr__(name: str) -> object:
    # Names whose modules import ``projections`` load on first use, so that
    # importing ``projections`` first (which imports ``engine.events``, and so
    # this package) never meets a half-initialised module. The cache and the
    # HTTP router load on first use too: the router needs the 'api' extra.
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attribute)
        globals()[name] = value
        return value
    if name in {"AsyncCacheAdapter", "AsyncCache"}:
        from engine import cache

        return getattr(cache, name)
    if name == "create_task_worker_router":
        from engine.api import create_task_worker_router

        return create_task_worker_router
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
