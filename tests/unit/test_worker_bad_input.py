"""Bad input gets a clear exception or a FAILED task with a readable error,
and the worker keeps serving other tasks afterwards."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest
from worker_support import gated

from engine import (
    AsyncTaskWorker,
    DuplicateTaskIdError,
    InvalidTimeoutError,
    NotAsyncTaskError,
    PayloadEncodingError,
    TaskStatus,
    UnknownTaskTypeError,
    UsageError,
)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path}/log.db"


async def answer():
    return 42


async def takes(value=None, conn=None):
    return "ran"


async def assert_still_serving(worker):
    task_id = await worker.add_task(answer)
    assert await worker.get_task_future(task_id) == 42


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("cannot print me")


class NoMessage(Exception):
    pass


async def test_unknown_task_type_name_raises_naming_it(make_worker):
    worker = await make_worker()

    with pytest.raises(UnknownTaskTypeError) as caught:
        await worker.add_task("no_such_type_xyz", 1)

    assert "no_such_type_xyz" in str(caught.value)
    assert isinstance(caught.value, UsageError)
    assert worker.get_all_tasks() == []
    await assert_still_serving(worker)


async def test_non_async_function_is_rejected_with_type_error(make_worker):
    worker = await make_worker()

    def plain(value):
        return value

    with pytest.raises(NotAsyncTaskError) as caught:
        await worker.add_task(plain, 1)

    assert isinstance(caught.value, TypeError)
    assert "plain" in str(caught.value)
    await assert_still_serving(worker)


@pytest.mark.parametrize("task_func", [None, 42, object()])
async def test_non_callable_task_func_is_rejected(make_worker, task_func):
    worker = await make_worker()

    with pytest.raises(TypeError):
        await worker.add_task(task_func)

    assert worker.get_all_tasks() == []
    await assert_still_serving(worker)


async def test_sqlite_rejects_unencodable_keyword_argument_naming_it(
    sqlite_url,
):
    async with AsyncTaskWorker(store=sqlite_url) as worker:
        with pytest.raises(PayloadEncodingError) as caught:
            await worker.add_task(takes, conn=threading.Lock())

        assert "Argument 'conn'" in str(caught.value)
        assert worker.get_all_tasks() == []
        await assert_still_serving(worker)


async def test_sqlite_rejects_unencodable_positional_argument_naming_it(
    sqlite_url,
):
    async with AsyncTaskWorker(store=sqlite_url) as worker:
        with pytest.raises(PayloadEncodingError) as caught:
            await worker.add_task(takes, object())

        assert "Argument 0" in str(caught.value)
        assert isinstance(caught.value, TypeError)
        await assert_still_serving(worker)


async def test_sqlite_rejects_unencodable_nested_argument(sqlite_url):
    async with AsyncTaskWorker(store=sqlite_url) as worker:
        with pytest.raises(PayloadEncodingError, match="Argument 'value'"):
            await worker.add_task(takes, value={"rows": [1, 2, object()]})

        await assert_still_serving(worker)


async def test_sqlite_rejects_unencodable_metadata(sqlite_url):
    async with AsyncTaskWorker(store=sqlite_url) as worker:
        with pytest.raises(PayloadEncodingError, match="metadata"):
            await worker.add_task(takes, metadata={"lock": threading.Lock()})

        await assert_still_serving(worker)


async def test_sqlite_rejects_unencodable_argument_in_add_tasks(sqlite_url):
    async with AsyncTaskWorker(store=sqlite_url) as worker:
        specs = [
            {"task_func": takes, "task_id": "fine"},
            {"task_func": takes, "kwargs": {"conn": threading.Lock()}},
        ]

        with pytest.raises(PayloadEncodingError, match="Argument 'conn'"):
            await worker.add_tasks(specs)

        assert worker.get_task_info("fine") is None
        await assert_still_serving(worker)


async def test_memory_store_accepts_unencodable_argument_as_is():
    lock = threading.Lock()

    async def identity(value):
        return value

    async with AsyncTaskWorker() as worker:
        result = await worker.get_task_future(await worker.add_task(identity, lock))

    assert result is lock


@pytest.mark.parametrize("timeout", [-1, 0, -0.5, math.nan, math.inf, "5", True])
async def test_add_task_rejects_bad_timeout(make_worker, timeout):
    worker = await make_worker()

    with pytest.raises(InvalidTimeoutError) as caught:
        await worker.add_task(answer, timeout=timeout)

    assert "timeout" in str(caught.value)
    assert worker.get_all_tasks() == []
    await assert_still_serving(worker)


@pytest.mark.parametrize("timeout", [-1, 0, math.nan, "soon"])
def test_worker_rejects_bad_task_timeout(timeout):
    with pytest.raises(InvalidTimeoutError, match="task_timeout"):
        AsyncTaskWorker(task_timeout=timeout)


def test_bad_timeout_error_is_a_value_error():
    with pytest.raises(ValueError):
        AsyncTaskWorker(task_timeout=-3)


async def test_exception_without_message_reports_its_type_name(make_worker):
    worker = await make_worker()

    async def silent():
        raise NoMessage()

    task_id = await worker.add_task(silent)
    with pytest.raises(Exception, match="NoMessage"):
        await worker.get_task_future(task_id)

    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.error == "NoMessage"
    assert info.error_type == "NoMessage"
    await assert_still_serving(worker)


async def test_exception_with_message_keeps_its_own_text(make_worker):
    worker = await make_worker()

    async def might_fail(value):
        if value < 0:
            raise ValueError("Value cannot be negative")
        return value * 2

    task_id = await worker.add_task(might_fail, -5)
    with pytest.raises(Exception, match="Value cannot be negative"):
        await worker.get_task_future(task_id)

    info = worker.get_task_info(task_id)
    assert info.error == "Value cannot be negative"
    assert info.error_type == "ValueError"


async def test_exception_whose_str_raises_fails_task_naming_type(make_worker):
    worker = await make_worker()

    async def unprintable():
        raise Unprintable()

    task_id = await worker.add_task(unprintable)
    outcome = await asyncio.gather(
        worker.get_task_future(task_id), return_exceptions=True
    )

    assert isinstance(outcome[0], Exception)
    assert "Unprintable" in str(outcome[0])
    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.error
    assert "Unprintable" in info.error
    assert info.error_type == "Unprintable"
    await assert_still_serving(worker)


async def test_exception_whose_str_returns_non_string_fails_task(make_worker):
    worker = await make_worker()

    class OddStr(Exception):
        def __str__(self):
            return 5

    async def odd():
        raise OddStr()

    task_id = await worker.add_task(odd)
    await asyncio.gather(worker.get_task_future(task_id), return_exceptions=True)

    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.FAILED
    assert "OddStr" in info.error
    await assert_still_serving(worker)


async def test_base_exception_from_task_fails_it_and_worker_keeps_serving(
    make_worker,
):
    worker = await make_worker(max_workers=1)

    class Escapes(BaseException):
        pass

    async def escapes():
        raise Escapes("out of band")

    task_id = await worker.add_task(escapes)
    await asyncio.wait([worker.get_task_future(task_id)], timeout=1)
    follower = await worker.add_task(answer)
    await asyncio.wait([worker.get_task_future(follower)], timeout=1)

    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.FAILED
    assert "out of band" in info.error
    assert worker.get_task_info(follower).status is TaskStatus.COMPLETED


async def test_sqlite_task_returning_unencodable_value_fails_clearly(sqlite_url):
    async with AsyncTaskWorker(store=sqlite_url) as worker:

        async def returns_lock():
            return threading.Lock()

        task_id = await worker.add_task(returns_lock)
        outcome = await asyncio.gather(
            worker.get_task_future(task_id), return_exceptions=True
        )

        info = worker.get_task_info(task_id)
        assert isinstance(outcome[0], Exception)
        assert info.status is TaskStatus.FAILED
        assert "result" in info.error
        assert "lock" in info.error.lower()
        assert info.error_type == "PayloadEncodingError"
        history = await worker.history(task_id)
        assert history[-1].data["error"] == info.error
        await assert_still_serving(worker)


async def test_memory_task_returning_unencodable_value_completes():
    lock = threading.Lock()

    async def returns_lock():
        return lock

    async with AsyncTaskWorker() as worker:
        task_id = await worker.add_task(returns_lock)
        result = await worker.get_task_future(task_id)

    assert result is lock
    assert worker.get_task_info(task_id).status is TaskStatus.COMPLETED


async def test_progress_callback_with_bad_value_fails_task(make_worker):
    worker = await make_worker()

    async def bad_progress(progress_callback=None):
        progress_callback("half")

    task_id = await worker.add_task(bad_progress)
    with pytest.raises(Exception, match="Progress"):
        await worker.get_task_future(task_id)

    assert worker.get_task_info(task_id).error_type == "TypeError"
    await assert_still_serving(worker)


async def test_reused_task_id_while_first_is_pending_is_rejected(make_worker):
    worker = await make_worker(max_workers=1)
    wait_on, gate, entered = gated()
    await worker.add_task(wait_on, task_id="busy")
    await entered.wait()

    with pytest.raises(DuplicateTaskIdError, match="busy"):
        await worker.add_task(answer, task_id="busy")

    gate.set()
    assert await worker.get_task_future("busy") == "released"


@pytest.mark.parametrize("task_id", ["", 17, b"bytes"])
async def test_invalid_task_id_is_rejected(make_worker, task_id):
    worker = await make_worker()

    with pytest.raises(UsageError, match="task_id"):
        await worker.add_task(answer, task_id=task_id)

    await assert_still_serving(worker)


@pytest.mark.parametrize("metadata", ["text", ["list"], 3])
async def test_non_dict_metadata_is_rejected(make_worker, metadata):
    worker = await make_worker()

    with pytest.raises(UsageError, match="metadata"):
        await worker.add_task(answer, metadata=metadata)

    await assert_still_serving(worker)


@pytest.mark.parametrize("max_workers", [0, -1, 1.5, "4"])
def test_worker_rejects_bad_max_workers(max_workers):
    with pytest.raises(UsageError, match="max_workers"):
        AsyncTaskWorker(max_workers=max_workers)


def test_worker_rejects_unknown_store_url_naming_it():
    with pytest.raises(UsageError, match="mysql"):
        AsyncTaskWorker(store="mysql://localhost/db")


async def test_add_tasks_beyond_max_queue_size_is_refused_and_queues_none(
    make_worker,
):
    worker = await make_worker(max_workers=1, max_queue_size=2)
    specs = [{"task_func": answer} for _ in range(3)]

    with pytest.raises(UsageError, match="max_queue_size is 2"):
        await worker.add_tasks(specs)

    assert worker.get_all_tasks() == []
    ids = await worker.add_tasks(specs[:2])
    assert await worker.wait_for_tasks(ids, timeout=5) == [42, 42]


async def test_priority_beyond_64_bits_is_refused_before_anything_is_queued(
    make_worker,
):
    worker = await make_worker()

    with pytest.raises(UsageError, match="out of range"):
        await worker.add_task(answer, priority=2**70)

    assert worker.get_all_tasks() == []


def _nested(depth: int) -> list:
    outer: list = []
    current = outer
    for _ in range(depth):
        current.append([])
        current = current[0]
    return outer


def _containing_itself() -> list:
    loop: list = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize("make_value", [lambda: _nested(1200), _containing_itself])
async def test_sqlite_rejects_too_deep_or_self_containing_values_naming_them(
    sqlite_url, make_value
):
    async with AsyncTaskWorker(store=sqlite_url) as worker:
        with pytest.raises(PayloadEncodingError, match="Argument 0 .* too deeply"):
            await worker.add_task(takes, make_value())
        with pytest.raises(PayloadEncodingError, match="metadata .* too deeply"):
            await worker.add_task(takes, metadata={"tree": make_value()})

        async def returns_it():
            return make_value()

        task_id = await worker.add_task(returns_it)
        with pytest.raises(Exception, match="too deeply"):
            await worker.get_task_future(task_id)
        assert worker.get_task_info(task_id).error_type == "PayloadEncodingError"
        await assert_still_serving(worker)


class HashableList(list):
    def __hash__(self):
        return 1


@pytest.mark.parametrize("group_id", [["batch", 7], {"a": 1}, HashableList([1])])
async def test_a_group_id_that_is_not_a_string_or_int_is_refused(make_worker, group_id):
    worker = await make_worker()
    with pytest.raises(UsageError, match="group_id must be a string or an int"):
        await worker.add_task(answer, metadata={"group_id": group_id})
    await assert_still_serving(worker)


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.get_all_tasks(status=3),
        lambda w: w.get_all_tasks(status=[3]),
        lambda w: w.get_all_tasks(older_than=5),
        lambda w: w.forget_finished(5),
        lambda w: w.forget_finished(None),
    ],
)
async def test_bad_task_filters_get_a_usage_error(make_worker, call):
    worker = await make_worker()
    with pytest.raises(UsageError, match="status|timedelta"):
        call(worker)
    await assert_still_serving(worker)


async def test_an_age_beyond_the_calendar_matches_nothing(make_worker):
    import datetime as dt

    worker = await make_worker()
    assert await worker.get_task_future(await worker.add_task(answer)) == 42

    assert worker.get_all_tasks(older_than=dt.timedelta.max) == []
    assert worker.forget_finished(dt.timedelta.max) == 0
    assert len(worker.get_all_tasks()) == 1
