"""AsyncTaskWorker basics: lifecycle, results, metadata, ids, listing, bulk.

Every store-backed test runs against the memory store and the SQLite store.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from worker_support import gated

from engine import (
    AsyncTaskWorker,
    DuplicateTaskIdError,
    EventType,
    TaskStatus,
    UsageError,
    WorkerNotStartedError,
)


async def double(value):
    return value * 2


async def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


async def test_add_task_returns_id_and_result_when_task_completes(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(double, 21)
    result = await worker.get_task_future(task_id)

    info = worker.get_task_info(task_id)
    assert result == 42
    assert info.status is TaskStatus.COMPLETED
    assert info.result == 42
    assert info.progress == 1.0
    assert info.error is None


async def test_task_info_times_are_aware_utc_and_ordered(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(double, 1)
    await worker.get_task_future(task_id)

    info = worker.get_task_info(task_id)
    for moment in (info.created_at, info.started_at, info.completed_at):
        assert moment.utcoffset() == dt.timedelta(0)
    assert info.created_at <= info.started_at <= info.completed_at


async def test_args_and_kwargs_reach_task_function(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(echo, 1, "two", key=[3], other={"x": 4})
    result = await worker.get_task_future(task_id)

    assert result == {"args": [1, "two"], "kwargs": {"key": [3], "other": {"x": 4}}}


async def test_task_info_pending_before_pickup_and_running_while_body_waits(
    make_worker,
):
    worker = await make_worker(max_workers=1)
    wait_on, gate, entered = gated()
    first = await worker.add_task(wait_on)
    await entered.wait()

    second = await worker.add_task(double, 1)

    assert worker.get_task_info(first).status is TaskStatus.RUNNING
    assert worker.get_task_info(first).started_at is not None
    assert worker.get_task_info(second).status is TaskStatus.PENDING
    assert worker.get_task_info(second).started_at is None
    gate.set()
    assert await worker.wait_for_tasks([first, second]) == ["released", 2]


async def test_get_task_info_returns_none_for_unknown_id(make_worker):
    worker = await make_worker()

    info = worker.get_task_info("no-such-task")

    assert info is None


async def test_metadata_kept_in_task_info_and_history(make_worker):
    worker = await make_worker()
    metadata = {"description": "Processing batch", "group_id": "g1", "n": 3}

    task_id = await worker.add_task(double, 2, metadata=metadata)
    await worker.get_task_future(task_id)

    assert worker.get_task_info(task_id).metadata == metadata
    history = await worker.history(task_id)
    assert history[0].data["metadata"] == metadata


async def test_metadata_defaults_to_empty_dict(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(double, 2)

    assert worker.get_task_info(task_id).metadata == {}


async def test_custom_task_id_is_used(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(double, 5, task_id="custom-id")
    result = await worker.get_task_future("custom-id")

    assert task_id == "custom-id"
    assert result == 10
    assert worker.get_task_info("custom-id").id == "custom-id"


async def test_add_task_rejects_reused_task_id_naming_it(make_worker):
    worker = await make_worker()
    await worker.add_task(double, 1, task_id="taken-id")

    with pytest.raises(DuplicateTaskIdError) as caught:
        await worker.add_task(double, 2, task_id="taken-id")

    assert "taken-id" in str(caught.value)
    assert caught.value.task_id == "taken-id"
    assert await worker.get_task_future("taken-id") == 2


async def test_add_task_rejects_reused_task_id_after_restart_on_sqlite(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    async with AsyncTaskWorker(store=url) as first:
        await first.get_task_future(await first.add_task(double, 1, task_id="t-1"))

    async with AsyncTaskWorker(store=url) as second:
        with pytest.raises(DuplicateTaskIdError, match="t-1"):
            await second.add_task(double, 2, task_id="t-1")

        assert second.get_task_info("t-1").result == 2


async def test_task_ids_are_unique_when_generated(make_worker):
    worker = await make_worker()

    ids = [await worker.add_task(double, i) for i in range(50)]

    assert len(set(ids)) == 50


async def test_add_task_before_start_raises_worker_not_started(store_url):
    worker = AsyncTaskWorker(store=store_url)

    with pytest.raises(WorkerNotStartedError) as caught:
        await worker.add_task(double, 1)

    assert "start()" in str(caught.value)
    assert worker.running is False


async def test_add_task_after_stop_raises_worker_not_started(make_worker):
    worker = await make_worker()
    await worker.stop()

    with pytest.raises(WorkerNotStartedError):
        await worker.add_task(double, 1)


async def test_async_context_manager_starts_and_stops_worker(store_url):
    async with AsyncTaskWorker(store=store_url, max_workers=2) as worker:
        running_inside = worker.running
        result = await worker.get_task_future(await worker.add_task(double, 4))

    assert running_inside is True
    assert result == 8
    assert worker.running is False


async def test_start_twice_keeps_one_pool(make_worker):
    worker = await make_worker(max_workers=1)
    wait_on, gate, entered = gated()

    await worker.start()
    blocker = await worker.add_task(wait_on)
    await entered.wait()
    waiting = await worker.add_task(double, 3)
    for _ in range(5):
        await asyncio.sleep(0)

    assert worker.get_task_info(waiting).status is TaskStatus.PENDING
    gate.set()
    assert await worker.wait_for_tasks([blocker, waiting]) == ["released", 6]


async def test_stop_twice_is_harmless(make_worker):
    worker = await make_worker()

    await worker.stop()
    await worker.stop()

    assert worker.running is False


async def test_stop_flushes_every_event_to_sqlite_log(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    worker = AsyncTaskWorker(store=url, max_workers=3)
    await worker.start()
    ids = [await worker.add_task(double, i) for i in range(20)]
    await worker.wait_for_tasks(ids)

    await worker.stop()

    async with AsyncTaskWorker(store=url) as reader:
        for task_id in ids:
            types = [event.type for event in await reader.history(task_id)]
            assert types == [
                EventType.QUEUED,
                EventType.STARTED,
                EventType.COMPLETED,
            ]
            assert reader.get_task_info(task_id).status is TaskStatus.COMPLETED


async def test_history_lists_versions_in_order_with_positions(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(double, 3)
    await worker.get_task_future(task_id)
    history = await worker.history(task_id)

    assert [event.version for event in history] == [1, 2, 3]
    positions = [event.position for event in history]
    assert positions == sorted(positions)
    assert history[-1].data["result"] == 6
    assert all(event.task_id == task_id for event in history)


async def test_max_workers_bounds_concurrent_tasks(make_worker):
    worker = await make_worker(max_workers=3)
    gate, three_in = asyncio.Event(), asyncio.Event()
    running = {"now": 0, "peak": 0}

    async def tracked():
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        if running["now"] == 3:
            three_in.set()
        await gate.wait()
        running["now"] -= 1

    ids = [await worker.add_task(tracked) for _ in range(8)]
    await three_in.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    statuses = [worker.get_task_info(task_id).status for task_id in ids]
    gate.set()
    await worker.wait_for_tasks(ids)

    assert statuses.count(TaskStatus.RUNNING) == 3
    assert statuses.count(TaskStatus.PENDING) == 5
    assert running["peak"] == 3


async def test_add_tasks_queues_all_and_returns_ids_in_order(make_worker):
    worker = await make_worker()
    specs = [
        {"task_func": double, "args": [i], "metadata": {"i": i}} for i in range(10)
    ]

    ids = await worker.add_tasks(specs)
    results = await worker.wait_for_tasks(ids)

    assert results == [i * 2 for i in range(10)]
    assert [worker.get_task_info(t).metadata["i"] for t in ids] == list(range(10))


async def test_add_tasks_accepts_task_type_names_and_keywords(make_worker):
    from engine.registry import register_task, unregister_task

    register_task("basics_echo", echo)
    try:
        worker = await make_worker()

        ids = await worker.add_tasks(
            [
                {"task_type": "basics_echo", "args": [1], "kwargs": {"k": 2}},
                {"task_func": "basics_echo", "task_id": "bulk-2", "priority": 3},
            ]
        )
        results = await worker.wait_for_tasks(ids)
    finally:
        unregister_task("basics_echo")

    assert ids[1] == "bulk-2"
    assert results == [{"args": [1], "kwargs": {"k": 2}}, {"args": [], "kwargs": {}}]
    assert worker.get_task_info("bulk-2").task_type == "basics_echo"


async def test_add_tasks_queues_none_when_one_spec_is_bad(make_worker):
    worker = await make_worker()
    specs = [
        {"task_func": double, "args": [1], "task_id": "good-1"},
        {"task_func": "no_such_task_type_anywhere"},
    ]

    with pytest.raises(UsageError):
        await worker.add_tasks(specs)

    assert worker.get_task_info("good-1") is None
    assert worker.get_all_tasks() == []


async def test_add_tasks_rejects_same_id_twice_in_one_call(make_worker):
    worker = await make_worker()
    specs = [
        {"task_func": double, "args": [1], "task_id": "twin"},
        {"task_func": double, "args": [2], "task_id": "twin"},
    ]

    with pytest.raises(DuplicateTaskIdError, match="twin"):
        await worker.add_tasks(specs)

    assert worker.get_task_info("twin") is None


async def test_get_all_tasks_filters_by_status_enum_string_and_list(make_worker):
    worker = await make_worker(max_workers=1)
    done = await worker.add_task(double, 1)
    await worker.get_task_future(done)
    wait_on, gate, entered = gated()
    running = await worker.add_task(wait_on)
    await entered.wait()
    pending = await worker.add_task(double, 2)

    by_enum = worker.get_all_tasks(status=TaskStatus.COMPLETED)
    by_string = worker.get_all_tasks(status="running")
    by_list = worker.get_all_tasks(status=[TaskStatus.PENDING, "completed"])
    gate.set()
    await worker.wait_for_tasks([running, pending])

    assert [info.id for info in by_enum] == [done]
    assert [info.id for info in by_string] == [running]
    assert [info.id for info in by_list] == [pending, done]


async def test_get_all_tasks_status_is_an_enum_equal_to_its_string(make_worker):
    worker = await make_worker()
    await worker.get_task_future(await worker.add_task(double, 1))

    [info] = worker.get_all_tasks()

    assert info.status is TaskStatus.COMPLETED
    assert info.status == "completed"


async def test_get_all_tasks_rejects_unknown_status_naming_it(make_worker):
    worker = await make_worker()

    with pytest.raises(UsageError, match="finished"):
        worker.get_all_tasks(status="finished")


async def test_get_all_tasks_newest_first_and_limit_keeps_newest(make_worker):
    worker = await make_worker()
    ids = []
    for i in range(5):
        ids.append(await worker.add_task(double, i))
        # Distinct creation times: wait for this task's own completion.
        await worker.get_task_future(ids[-1])

    everything = worker.get_all_tasks()
    newest_two = worker.get_all_tasks(limit=2)

    assert [info.id for info in everything] == ids[::-1]
    assert [info.id for info in newest_two] == [ids[4], ids[3]]


async def test_get_all_tasks_newest_first_when_added_back_to_back(make_worker):
    worker = await make_worker(max_workers=1)
    wait_on, gate, entered = gated()
    blocker = await worker.add_task(wait_on)
    await entered.wait()

    ids = [await worker.add_task(double, i) for i in range(200)]
    listed = [info.id for info in worker.get_all_tasks(status="pending")]
    gate.set()
    await worker.wait_for_tasks([blocker, *ids])

    assert listed == ids[::-1]


async def test_get_all_tasks_older_than_filters_by_age(make_worker):
    worker = await make_worker()
    task_id = await worker.add_task(double, 1)
    await worker.get_task_future(task_id)

    old_enough = worker.get_all_tasks(older_than=dt.timedelta(0))
    too_young = worker.get_all_tasks(older_than=dt.timedelta(hours=1))

    assert [info.id for info in old_enough] == [task_id]
    assert too_young == []


async def test_running_attribute_follows_lifecycle(store_url):
    worker = AsyncTaskWorker(store=store_url)
    before = worker.running

    await worker.start()
    during = worker.running
    await worker.stop()

    assert (before, during, worker.running) == (False, True, False)


async def test_sqlite_worker_keeps_finished_tasks_after_restart(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    async with AsyncTaskWorker(store=url) as first:
        task_id = await first.add_task(double, 7, metadata={"k": "v"})
        await first.get_task_future(task_id)
        before = first.get_task_info(task_id)

    async with AsyncTaskWorker(store=url) as second:
        after = second.get_task_info(task_id)
        future_result = await second.get_task_future(task_id)

    assert after == before
    assert future_result == 14


async def test_history_of_unknown_task_raises_key_error(make_worker):
    worker = await make_worker()

    with pytest.raises(KeyError, match="ghost"):
        await worker.history("ghost")


async def test_tasks_never_share_a_metadata_dict(make_worker):
    worker = await make_worker()
    given = {"group_id": "g", "tags": ["a"]}
    plain_a = await worker.add_task(echo, 1)
    plain_b = await worker.add_task(echo, 2)
    grouped = await worker.add_task(echo, 3, metadata=given)

    worker.get_task_info(plain_a).metadata["group_id"] = "changed"
    given["group_id"] = "changed by the caller"
    given["tags"].append("b")

    assert worker.get_task_info(plain_b).metadata == {}
    assert worker.get_task_info(grouped).metadata == {"group_id": "g", "tags": ["a"]}
    later = await worker.add_task(echo, 4)
    assert worker.get_task_info(later).metadata == {}


async def test_worker_events_count_as_processed_on_its_event_manager(make_worker):
    worker = await make_worker()
    task_id = await worker.add_task(double, 2)
    await worker.get_task_future(task_id)

    assert worker.events.is_processed(f"{task_id}:1")
    assert worker.events.is_processed(f"{task_id}:3")
    assert not worker.events.is_processed(f"{task_id}:4")


async def test_metadata_that_cannot_be_copied_is_kept_by_reference():
    import threading

    async with AsyncTaskWorker() as worker:
        lock = threading.Lock()
        task_id = await worker.add_task(double, 1, metadata={"lock": lock})
        await worker.get_task_future(task_id)

        assert worker.get_task_info(task_id).metadata["lock"] is lock
