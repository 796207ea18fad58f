"""The task registry: @task, register_task, get_task_function,
get_all_task_types, and their use by the worker."""

from __future__ import annotations

import functools

import pytest

from engine import (
    AsyncTaskWorker,
    NotAsyncTaskError,
    UsageError,
    get_all_task_types,
    get_task_function,
    register_task,
    task,
)
from engine.registry import unregister_task

PREFIX = "test_registry__"


@pytest.fixture(autouse=True)
def forget_registered_types():
    yield
    for task_type in get_all_task_types():
        if task_type.startswith(PREFIX):
            unregister_task(task_type)


def test_task_decorator_returns_the_function_itself():
    async def process(data):
        return data

    decorated = task(PREFIX + "process")(process)

    assert decorated is process
    assert get_task_function(PREFIX + "process") is process


def test_task_decorator_with_syntax_registers_function():
    @task(PREFIX + "decorated")
    async def decorated(data):
        return data

    assert get_task_function(PREFIX + "decorated") is decorated


def test_register_task_returns_function_and_registers_it():
    async def custom(data):
        return data

    returned = register_task(PREFIX + "custom", custom)

    assert returned is custom
    assert get_task_function(PREFIX + "custom") is custom


def test_register_task_again_replaces_function():
    async def first():
        return 1

    async def second():
        return 2

    register_task(PREFIX + "same", first)
    register_task(PREFIX + "same", second)

    assert get_task_function(PREFIX + "same") is second


def test_get_task_function_returns_none_for_unknown_type():
    found = get_task_function(PREFIX + "never_registered")

    assert found is None


def test_get_all_task_types_lists_registered_types_sorted():
    async def body():
        return None

    register_task(PREFIX + "b", body)
    register_task(PREFIX + "a", body)

    types = get_all_task_types()

    assert isinstance(types, list)
    ours = [t for t in types if t.startswith(PREFIX)]
    assert ours == [PREFIX + "a", PREFIX + "b"]
    assert types == sorted(types)


def test_registry_calls_are_plain_not_coroutines():
    async def body():
        return None

    results = [
        register_task(PREFIX + "plain", body),
        get_task_function(PREFIX + "plain"),
        get_all_task_types(),
    ]

    assert not any(hasattr(r, "__await__") for r in results)


def test_unregister_task_removes_type():
    async def body():
        return None

    register_task(PREFIX + "gone", body)

    first = unregister_task(PREFIX + "gone")
    second = unregister_task(PREFIX + "gone")

    assert (first, second) == (True, False)
    assert get_task_function(PREFIX + "gone") is None


def test_task_decorator_rejects_non_async_function_with_type_error():
    def sync_body(data):
        return data

    with pytest.raises(TypeError) as caught:
        task(PREFIX + "sync")(sync_body)

    assert isinstance(caught.value, NotAsyncTaskError)
    assert "sync_body" in str(caught.value)
    assert get_task_function(PREFIX + "sync") is None


def test_register_task_rejects_non_async_function():
    with pytest.raises(NotAsyncTaskError):
        register_task(PREFIX + "lambda", lambda: None)

    assert get_task_function(PREFIX + "lambda") is None


def test_register_task_rejects_async_generator_function():
    async def generator():
        yield 1

    with pytest.raises(NotAsyncTaskError):
        register_task(PREFIX + "gen", generator)


def test_register_task_rejects_non_callable():
    with pytest.raises(TypeError):
        register_task(PREFIX + "number", 42)


@pytest.mark.parametrize("task_type", ["", None, 7])
def test_register_task_rejects_bad_type_name(task_type):
    async def body():
        return None

    with pytest.raises(UsageError):
        register_task(task_type, body)


def test_register_task_accepts_partial_of_async_function():
    async def scaled(factor, value):
        return factor * value

    partial = functools.partial(scaled, 3)

    returned = register_task(PREFIX + "partial", partial)

    assert returned is partial


async def test_worker_runs_task_by_registered_type_name():
    @task(PREFIX + "double")
    async def double(value):
        return value * 2

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(PREFIX + "double", 21)
        result = await worker.get_task_future(task_id)

    assert result == 42
    assert worker.get_task_info(task_id).task_type == PREFIX + "double"


async def test_worker_records_registered_name_for_function_object():
    @task(PREFIX + "named")
    async def named():
        return "ok"

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(named)
        await worker.get_task_future(task_id)

    assert worker.get_task_info(task_id).task_type == PREFIX + "named"


async def test_worker_records_qualified_name_for_unregistered_function():
    async def anonymous():
        return "ok"

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(anonymous)
        await worker.get_task_future(task_id)

    task_type = worker.get_task_info(task_id).task_type
    assert task_type.endswith("anonymous")
    assert "test_registry" in task_type


async def test_worker_runs_function_from_get_task_function():
    @task(PREFIX + "lookup")
    async def lookup(value):
        return value + 1

    async with AsyncTaskWorker() as worker:
        task_func = get_task_function(PREFIX + "lookup")
        result = await worker.get_task_future(await worker.add_task(task_func, 1))

    assert result == 2
