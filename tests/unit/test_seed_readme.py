"""The async-task-worker README's examples, with ``engine`` imports, made
fast: the tiny sleeps inside task bodies are their workload, never used to
wait for an outcome."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from engine import (
    AsyncTaskWorker,
    EventSubscription,
    TaskStatus,
    event_manager,
    get_all_task_types,
    get_task_function,
    register_task,
    task,
)
from engine.registry import unregister_task

README_TYPES = [
    "process_data",
    "process_items",
    "unique_task_type",
    "might_fail",
    "custom_task",
    "long_running_task",
    "background_task",
    "initial_processor",
]


@pytest.fixture(autouse=True)
def restore_registry():
    """The README's type names are generic: put back whatever was there."""
    before = {name: get_task_function(name) for name in README_TYPES}
    yield
    for name, func in before.items():
        if func is None:
            unregister_task(name)
        else:
            register_task(name, func)


def define_process_data():
    @task("process_data")
    async def process_data(data, progress_callback=None):
        total = len(data)
        result = []

        for i, item in enumerate(data):
            processed = item * 2
            result.append(processed)

            if progress_callback:
                progress_callback((i + 1) / total)

            await asyncio.sleep(0.001)

        return result

    return process_data


async def test_quick_start_runs_process_data_to_completion():
    process_data = define_process_data()
    worker = AsyncTaskWorker(max_workers=5)
    await worker.start()

    try:
        task_id = await worker.add_task(process_data, [1, 2, 3, 4, 5], priority=0)
        await worker.get_task_future(task_id)
        info = worker.get_task_info(task_id)
    finally:
        await worker.stop()

    assert info.status == "completed"
    assert info.status not in ("pending", "running")
    assert info.result == [2, 4, 6, 8, 10]
    assert f"{info.progress * 100:.1f}%" == "100.0%"


async def test_basic_configuration_start_and_graceful_stop():
    worker = AsyncTaskWorker(max_workers=3, task_timeout=60)
    await worker.start()

    try:
        running = worker.running
    finally:
        await worker.stop()

    assert running is True
    assert worker.running is False


async def test_documented_constructor_options_are_accepted():
    worker = AsyncTaskWorker(
        max_workers=10,
        task_timeout=None,
        worker_poll_interval=1.0,
        cache_enabled=False,
        cache_ttl=3600,
        cache_max_size=1000,
        cache_adapter=None,
    )

    async with worker:
        result = await worker.get_task_future(
            await worker.add_task(define_process_data(), [1])
        )

    assert result == [2]


async def test_method_two_task_type_reference_via_get_task_function():
    define_process_data()

    async with AsyncTaskWorker() as worker:
        task_func = get_task_function("process_data")
        task_id = await worker.add_task(task_func, [3])
        result = await worker.get_task_future(task_id)

    assert result == [6]


async def test_registry_lookup_and_manual_registration():
    async def my_task(data):
        return {"processed": data}

    register_task("custom_task", my_task)
    task_types = get_all_task_types()
    task_func = get_task_function("custom_task")

    async with AsyncTaskWorker() as worker:
        result = await worker.get_task_future(await worker.add_task(task_func, 1))

    assert "custom_task" in task_types
    assert task_func is my_task
    assert result == {"processed": 1}


async def test_unique_task_type_reports_half_progress():
    seen = asyncio.Event()
    proceed = asyncio.Event()

    @task("unique_task_type")
    async def my_task(arg1, arg2, progress_callback=None):
        if progress_callback:
            progress_callback(0.5)
        seen.set()
        await proceed.wait()
        return arg1 + arg2

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(my_task, 1, 2)
        await seen.wait()
        halfway = worker.get_task_info(task_id).progress
        proceed.set()
        result = await worker.get_task_future(task_id)

    assert halfway == 0.5
    assert result == 3


async def test_add_task_with_all_options():
    async def my_task(arg1, arg2, kw1=None, kw2=None):
        return [arg1, arg2, kw1, kw2]

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(
            my_task,
            "arg1",
            "arg2",
            kw1="val1",
            kw2="val2",
            priority=0,
            task_id="custom-id",
            metadata={"key": "value"},
            timeout=30,
            use_cache=True,
            cache_ttl=60,
        )
        result = await worker.get_task_future(task_id)
        info = worker.get_task_info(task_id)

    assert task_id == "custom-id"
    assert result == ["arg1", "arg2", "val1", "val2"]
    assert info.metadata == {"key": "value"}


async def test_tracking_tasks_fields_and_filtered_listing():
    async def process_items(items):
        return len(items)

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(
            process_items,
            ["item1", "item2", "item3"],
            priority=1,
            metadata={"description": "Processing batch"},
        )
        await worker.get_task_future(task_id)
        info = worker.get_task_info(task_id)
        recent = worker.get_all_tasks(
            status=TaskStatus.COMPLETED, limit=10, older_than=timedelta(hours=1)
        )
        everything = worker.get_all_tasks(status=TaskStatus.COMPLETED, limit=10)

    assert info.id == task_id
    assert info.status == "completed"
    assert f"Progress: {info.progress * 100:.1f}%" == "Progress: 100.0%"
    assert info.created_at <= info.started_at <= info.completed_at
    assert info.result == 3
    assert info.error is None
    assert info.metadata == {"description": "Processing batch"}
    assert recent == []
    assert [t.id for t in everything] == [task_id]


async def test_task_cancellation_example():
    started = asyncio.Event()

    async def slow():
        started.set()
        await asyncio.sleep(3600)

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(slow)
        await started.wait()
        cancelled = await worker.cancel_task(task_id)
        again = await worker.cancel_task(task_id)

    assert cancelled is True
    assert again is False
    assert worker.get_task_info(task_id).status == "cancelled"


async def test_waiting_for_tasks_example():
    async def ok(value):
        await asyncio.sleep(0.001)
        return value

    async def bad():
        raise RuntimeError("it broke")

    async with AsyncTaskWorker() as worker:
        task_id1 = await worker.add_task(ok, 1)
        task_id2 = await worker.add_task(bad)
        future = worker.get_task_future(task_id1)
        result = await future
        futures = worker.get_task_futures([task_id1, task_id2])
        results = await asyncio.gather(*futures, return_exceptions=True)

    assert result == 1
    assert results[0] == 1
    assert isinstance(results[1], Exception)
    assert str(results[1]) == "it broke"


async def test_context_manager_example():
    async def my_task(arg1, arg2):
        return arg1 * arg2

    async with AsyncTaskWorker(max_workers=5) as worker:
        task_id = await worker.add_task(my_task, 6, 7)
        result = await worker.get_task_future(task_id)

    assert result == 42
    assert not worker.running


async def test_error_handling_example():
    @task("might_fail")
    async def might_fail(value):
        if value < 0:
            raise ValueError("Value cannot be negative")
        return value * 2

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(might_fail, -5)
        await asyncio.gather(worker.get_task_future(task_id), return_exceptions=True)
        info = worker.get_task_info(task_id)

    assert info.status == TaskStatus.FAILED
    assert info.error == "Value cannot be negative"


async def test_progress_reporting_example_stores_progress():
    @task("long_running_task")
    async def long_running_task(items, progress_callback=None):
        total = len(items)

        for i, _item in enumerate(items):
            if progress_callback:
                progress_callback(i / total)
            await asyncio.sleep(0.001)

        if progress_callback:
            progress_callback(1.0)

        return "Completed"

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(long_running_task, list(range(5)))
        result = await worker.get_task_future(task_id)
        info = worker.get_task_info(task_id)

    assert result == "Completed"
    assert info.progress == 1.0


async def test_daemon_example_background_task():
    @task("background_task")
    async def background_task(data, progress_callback=None):
        return {"status": "completed"}

    worker = AsyncTaskWorker(max_workers=5)
    await worker.start()
    try:
        task_id = await worker.add_task(background_task, {"key": "value"})
        result = await worker.get_task_future(task_id)
    finally:
        await worker.stop()

    assert result == {"status": "completed"}


async def test_event_subscription_sees_completion_of_grouped_task():
    @task("initial_processor")
    async def initial_processor(data):
        await asyncio.sleep(0.001)
        return {"id": data["id"], "stage": "initial"}

    await event_manager.start()
    try:
        async with AsyncTaskWorker(event_manager=event_manager) as worker:
            async with EventSubscription("chain-1") as subscription:
                await worker.add_task(
                    initial_processor,
                    data={"id": "chain-1"},
                    metadata={"group_id": "chain-1"},
                )
                event = await subscription.wait_for_completion_event(timeout=10)
    finally:
        await event_manager.stop()

    assert event is not None
    assert event["status"] == "completed"
    assert event["result"] == {"id": "chain-1", "stage": "initial"}
    assert event["group_id"] == "chain-1"
