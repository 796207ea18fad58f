"""The public surface: ``engine.__all__`` lists exactly the public names,
each importable, and the names API.md promises are there."""

from __future__ import annotations
import __future__

import engine

PROMISED = {
    "AsyncTaskWorker",
    "task",
    "register_task",
    "get_task_function",
    "get_all_task_types",
    "TaskInfo",
    "TaskStatus",
    "TaskEvent",
    "EventType",
    "EventManager",
    "GroupFilter",
    "EventSubscription",
    "event_manager",
}


def test_all_names_are_importable_from_engine():
    missing = [name for name in engine.__all__ if not hasattr(engine, name)]

    assert missing == []


def test_all_holds_every_promised_name():
    assert PROMISED <= set(engine.__all__)


def test_all_matches_the_public_names_of_the_module():
    public = {
        name
        for name in dir(engine)
        if not name.startswith("_")
        and not isinstance(getattr(engine, name), type(engine))
        and not isinstance(getattr(engine, name), __future__._Feature)
    }
    lazy = {"AsyncTaskWorker", "TaskInfo", "TaskStatus"}

    assert public | lazy == set(engine.__all__) | lazy


def test_cache_and_router_load_on_first_use():
    from engine.api import create_task_worker_router
    from engine.cache import AsyncCacheAdapter

    assert engine.AsyncCacheAdapter is AsyncCacheAdapter
    assert engine.create_task_worker_router is create_task_worker_router
