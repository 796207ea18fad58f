"""Restart from an existing SQLite log: every TaskInfo is rebuilt, queued
tasks run, tasks whose worker died run again as a new attempt, and tasks
that cannot resume end FAILED with an error that says why."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import pytest

from engine import AsyncTaskWorker, EventType, TaskStatus, register_task
from engine.events import TaskEvent, utcnow
from engine.registry import unregister_task
from engine.store.sqlite import SQLiteEventStore

SQUARE = "test_recovery__square"
RECORD = "test_recovery__record"
ran: list[str] = []


async def square(value):
    ran.append(f"square({value})")
    return value * value


async def record(label):
    ran.append(label)
    return label


@pytest.fixture(autouse=True)
def registered():
    ran.clear()
    register_task(SQUARE, square)
    register_task(RECORD, record)
    yield
    unregister_task(SQUARE)
    unregister_task(RECORD)


@pytest.fixture
def url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path}/log.db"


async def write_log(url, *events):
    """Append events straight to the store, as a dead process left them."""
    store = SQLiteEventStore(url)
    await store.open()
    try:
        await store.append(list(events))
    finally:
        await store.close()


def ev(task_id, version, type_, at=None, **data):
    return TaskEvent.build(None, task_id, version, type_, at or utcnow(), data)


def queued(task_id, task_type=SQUARE, args=(7,), **data):
    return ev(
        task_id, 1, EventType.QUEUED, task_type=task_type, args=list(args), **data
    )


async def stop_with_tasks_queued(url, specs):
    """Run a worker holding its only slot, queue ``specs``, and stop it so
    that they stay queued in the log; returns their ids."""
    gate, entered = asyncio.Event(), asyncio.Event()

    async def blocker():
        entered.set()
        await gate.wait()

    async with AsyncTaskWorker(store=url, max_workers=1) as worker:
        await worker.add_task(blocker)
        await entered.wait()
        ids = [await worker.add_task(*args, **kwargs) for args, kwargs in specs]
        # Released now, the blocker ends after stop() began.
        gate.set()
    return ids


async def test_restart_rebuilds_task_infos_and_runs_queued_tasks(url):
    async with AsyncTaskWorker(store=url) as first:
        done = await first.add_task(SQUARE, 3, metadata={"batch": 1})
        await first.get_task_future(done)
    queued_ids = await stop_with_tasks_queued(
        url, [((SQUARE, i), {"metadata": {"i": i}}) for i in range(5)]
    )
    ran.clear()

    async with AsyncTaskWorker(store=url) as second:
        rebuilt = {t: second.get_task_info(t) for t in [done, *queued_ids]}
        results = await second.wait_for_tasks(queued_ids)

        histories = [await second.history(t) for t in queued_ids]

    assert rebuilt[done].status is TaskStatus.COMPLETED
    assert rebuilt[done].result == 9
    assert rebuilt[done].metadata == {"batch": 1}
    assert all(rebuilt[t].task_type == SQUARE for t in queued_ids)
    assert [rebuilt[t].metadata for t in queued_ids] == [{"i": i} for i in range(5)]
    assert results == [0, 1, 4, 9, 16]
    assert sorted(ran) == sorted(f"square({i})" for i in range(5))
    for history in histories:
        assert [e.type for e in history] == [
            EventType.QUEUED,
            EventType.STARTED,
            EventType.COMPLETED,
        ]
        assert history[1].data["attempt"] == 1


async def test_restart_keeps_priority_order_of_queued_tasks(url):
    specs = [
        ((RECORD, label), {"priority": p})
        for label, p in [("c", 3), ("a", 1), ("b", 2), ("a2", 1)]
    ]
    ids = await stop_with_tasks_queued(url, specs)
    ran.clear()

    async with AsyncTaskWorker(store=url, max_workers=1) as second:
        await second.wait_for_tasks(ids)

    assert ran == ["a", "a2", "b", "c"]


async def test_restart_runs_queued_task_given_as_function_object(url):
    ids = await stop_with_tasks_queued(url, [((square, 4), {})])

    async with AsyncTaskWorker(store=url) as second:
        result = await second.get_task_future(ids[0])

    assert result == 16


async def test_restart_preserves_argument_types(url):
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    received = []

    async def keeps(value, *, at):
        received.append((value, at))
        return "ok"

    register_task("test_recovery__keeps", keeps)
    try:
        ids = await stop_with_tasks_queued(
            url, [(("test_recovery__keeps", (1, b"x")), {"at": when})]
        )
        async with AsyncTaskWorker(store=url) as second:
            await second.get_task_future(ids[0])
    finally:
        unregister_task("test_recovery__keeps")

    assert received == [((1, b"x"), when)]


async def test_started_task_runs_again_as_attempt_two(url):
    await write_log(
        url,
        queued("lost-1", args=(5,), priority=0),
        ev("lost-1", 2, EventType.STARTED, attempt=1, node_id="dead"),
    )

    async with AsyncTaskWorker(store=url) as worker:
        result = await worker.get_task_future("lost-1")
        history = await worker.history("lost-1")
        info = worker.get_task_info("lost-1")

    assert result == 25
    assert ran == ["square(5)"]
    assert info.status is TaskStatus.COMPLETED
    assert info.attempt == 2
    assert [e.type for e in history] == [
        EventType.QUEUED,
        EventType.STARTED,
        EventType.QUEUED,
        EventType.STARTED,
        EventType.COMPLETED,
    ]
    assert history[2].data["attempt"] == 2
    assert history[2].data["reason"] == "worker_lost"
    assert history[3].data["attempt"] == 2


async def test_task_last_seen_reporting_progress_runs_again(url):
    await write_log(
        url,
        queued("lost-2", args=(2,)),
        ev("lost-2", 2, EventType.STARTED, attempt=1),
        ev("lost-2", 3, EventType.PROGRESS, progress=0.5),
    )

    async with AsyncTaskWorker(store=url) as worker:
        result = await worker.get_task_future("lost-2")
        info = worker.get_task_info("lost-2")

    assert result == 4
    assert info.attempt == 2
    assert info.progress == 1.0


async def test_started_task_of_unregistered_type_fails_naming_type(url):
    await write_log(
        url,
        queued("orphan", task_type="test_recovery__nowhere"),
        ev("orphan", 2, EventType.STARTED, attempt=1),
    )

    async with AsyncTaskWorker(store=url) as worker:
        info = worker.get_task_info("orphan")
        follow_up = await worker.get_task_future(await worker.add_task(SQUARE, 2))
        history = await worker.history("orphan")

    assert info.status is TaskStatus.FAILED
    assert "test_recovery__nowhere" in info.error
    assert info.error_type == "UnknownTaskTypeError"
    assert info.completed_at is not None
    assert history[-1].type is EventType.FAILED
    assert follow_up == 4


async def test_queued_task_of_unregistered_type_fails_naming_type(url):
    await write_log(url, queued("orphan-q", task_type="test_recovery__gone"))

    async with AsyncTaskWorker(store=url) as worker:
        info = worker.get_task_info("orphan-q")

    assert info.status is TaskStatus.FAILED
    assert "test_recovery__gone" in info.error


async def test_future_of_task_failed_at_recovery_raises_its_error(url):
    await write_log(url, queued("orphan-f", task_type="test_recovery__gone"))

    async with AsyncTaskWorker(store=url) as worker:
        with pytest.raises(Exception, match="test_recovery__gone"):
            await worker.get_task_future("orphan-f")


async def test_started_task_with_attempts_exhausted_fails_worker_lost(url):
    await write_log(
        url,
        queued("spent"),
        ev("spent", 2, EventType.STARTED, attempt=1),
        ev("spent", 3, EventType.QUEUED, attempt=2, reason="worker_lost"),
        ev("spent", 4, EventType.STARTED, attempt=2),
        ev("spent", 5, EventType.QUEUED, attempt=3, reason="worker_lost"),
        ev("spent", 6, EventType.STARTED, attempt=3),
    )

    async with AsyncTaskWorker(store=url) as worker:
        info = worker.get_task_info("spent")
        history = await worker.history("spent")

    assert ran == []
    assert info.status is TaskStatus.FAILED
    assert info.error_type == "WorkerLostError"
    assert "worker" in info.error.lower()
    assert info.attempt == 3
    assert [e.type for e in history][-1] is EventType.FAILED


async def test_max_attempts_one_fails_lost_task_at_once(url):
    await write_log(url, queued("once"), ev("once", 2, EventType.STARTED, attempt=1))

    async with AsyncTaskWorker(store=url, max_attempts=1) as worker:
        info = worker.get_task_info("once")

    assert ran == []
    assert info.status is TaskStatus.FAILED
    assert info.error_type == "WorkerLostError"


async def test_finished_tasks_are_not_run_again(url):
    await write_log(
        url,
        queued("fin-1"),
        ev("fin-1", 2, EventType.STARTED, attempt=1),
        ev("fin-1", 3, EventType.COMPLETED, result=49),
        queued("fin-2"),
        ev("fin-2", 2, EventType.CANCELLED, error="cancelled"),
        queued("fin-3"),
        ev("fin-3", 2, EventType.STARTED, attempt=1),
        ev("fin-3", 3, EventType.FAILED, error="boom", error_type="ValueError"),
    )

    async with AsyncTaskWorker(store=url) as worker:
        probe = await worker.get_task_future(await worker.add_task(RECORD, "probe"))
        statuses = [worker.get_task_info(t).status for t in ["fin-1", "fin-2", "fin-3"]]

    assert probe == "probe"
    assert ran == ["probe"]
    assert statuses == [TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.FAILED]
    assert worker.get_task_info("fin-1").result == 49


async def test_replay_logs_counts_and_requeue_actions(url, caplog):
    await write_log(
        url,
        queued("r-queued"),
        queued("r-lost"),
        ev("r-lost", 2, EventType.STARTED, attempt=1),
        queued("r-orphan", task_type="test_recovery__gone"),
    )

    with caplog.at_level(logging.INFO, logger="engine"):
        async with AsyncTaskWorker(store=url) as worker:
            await worker.wait_for_tasks(["r-queued", "r-lost"])

    by_action = {}
    for r in caplog.records:
        by_action.setdefault(getattr(r, "action", None), []).append(r)
    [replay] = by_action["replay_finished"]
    assert (replay.requeued, replay.retried, replay.failed) == (1, 1, 1)
    assert replay.tasks == 3
    assert [r.task_id for r in by_action["task_requeued"]] == ["r-lost"]
    assert by_action["task_requeued"][0].attempt == 2


async def test_get_all_tasks_older_than_sees_replayed_old_tasks(url):
    old = utcnow() - dt.timedelta(hours=3)
    await write_log(
        url,
        ev("old", 1, EventType.QUEUED, at=old, task_type=SQUARE, args=[1]),
        ev("old", 2, EventType.STARTED, at=old, attempt=1),
        ev("old", 3, EventType.COMPLETED, at=old, result=1),
    )

    async with AsyncTaskWorker(store=url) as worker:
        new = await worker.add_task(SQUARE, 2)
        await worker.get_task_future(new)

        older = worker.get_all_tasks(older_than=dt.timedelta(hours=1))
        everything = worker.get_all_tasks()

    assert [i.id for i in older] == ["old"]
    assert [i.id for i in everything] == [new, "old"]
    assert older[0].created_at == old


async def test_each_restart_leaves_one_terminal_event_per_task(url):
    ids = await stop_with_tasks_queued(url, [((SQUARE, i), {}) for i in range(3)])

    async with AsyncTaskWorker(store=url) as second:
        await second.wait_for_tasks(ids)
    async with AsyncTaskWorker(store=url) as third:
        histories = [await third.history(t) for t in ids]

    for history in histories:
        terminal = [e for e in history if e.type is EventType.COMPLETED]
        assert len(terminal) == 1
        assert [e.version for e in history] == list(range(1, len(history) + 1))
    assert sorted(ran) == sorted(f"square({i})" for i in range(3))


async def test_max_queue_size_still_bounds_queue_after_recovered_tasks_ran(url):
    await write_log(url, *(queued(f"room-{i}", args=(i,)) for i in range(3)))
    gate, entered = asyncio.Event(), asyncio.Event()

    async def blocker():
        entered.set()
        await gate.wait()

    async with AsyncTaskWorker(store=url, max_workers=1, max_queue_size=2) as worker:
        await worker.wait_for_tasks([f"room-{i}" for i in range(3)])
        await worker.add_task(blocker)
        await entered.wait()
        filled = [await worker.add_task(SQUARE, i) for i in range(2)]
        third = asyncio.ensure_future(worker.add_task(SQUARE, 9))
        for _ in range(20):
            await asyncio.sleep(0)
        third_returned_while_full = third.done()
        gate.set()
        third_id = await third
        await worker.wait_for_tasks([*filled, third_id])

    assert third_returned_while_full is False
