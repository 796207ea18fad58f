"""A payload that passes add_task's checks but that the store cannot write
costs only its own task: the caller gets a clear error, the other tasks of
the same batch are written and run, and the append loop keeps going."""

from __future__ import annotations

import asyncio

import pytest

from engine import AsyncTaskWorker, PayloadEncodingError
from engine.store.base import EventStore


async def echo(value):
    return "ran"


def _nested_dicts(depth: int) -> dict:
    value: object = 0
    for _ in range(depth):
        value = {"k": value}
    return value  # type: ignore[return-value]


async def test_one_unwritable_task_harms_no_other(store: EventStore):
    deep = _nested_dicts(400)
    async with AsyncTaskWorker(store=store) as worker:
        both = asyncio.create_task(
            worker.add_tasks(
                [
                    {"task_func": echo, "args": ["hello"], "task_id": "good-1"},
                    {"task_func": echo, "args": [deep], "task_id": "bad-1"},
                ]
            )
        )
        alone = asyncio.create_task(worker.add_task(echo, "again", task_id="good-2"))
        outcomes = await asyncio.wait_for(
            asyncio.gather(both, alone, return_exceptions=True), 10
        )
        if store.persistent:
            assert isinstance(outcomes[0], PayloadEncodingError)
            assert worker.get_task_info("bad-1") is None
        assert outcomes[1] == "good-2"
        assert await worker.get_task_future("good-2") == "ran"
        later = await worker.add_task(echo, "later")
        assert await asyncio.wait_for(worker.get_task_future(later), 10) == "ran"
        if not store.persistent:
            assert await worker.get_task_future("good-1") == "ran"


@pytest.mark.parametrize("depth", [400])
async def test_a_deep_argument_is_refused_or_run(store: EventStore, depth: int):
    async with AsyncTaskWorker(store=store) as worker:
        try:
            task_id = await asyncio.wait_for(
                worker.add_task(echo, _nested_dicts(depth)), 10
            )
        except PayloadEncodingError as exc:
            assert store.persistent
            assert "Argument 0" in str(exc) or "event data" in str(exc)
        else:
            assert await worker.get_task_future(task_id) == "ran"
            assert [e.type.value for e in await worker.history(task_id)][-1] == (
                "completed"
            )


async def complex_value():
    return 1 + 2j


async def test_a_cached_value_the_log_cannot_store_fails_the_task_clearly(tmp_path):
    from engine.cache import AsyncCacheAdapter

    cache = AsyncCacheAdapter()
    async with AsyncTaskWorker(cache_adapter=cache, cache_enabled=True) as memory:
        task_id = await memory.add_task(complex_value)
        assert await memory.get_task_future(task_id) == 1 + 2j

    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    async with AsyncTaskWorker(
        store=url, cache_adapter=cache, cache_enabled=True
    ) as logged:
        task_id = await logged.add_task(complex_value)
        with pytest.raises(Exception, match="cache holds cannot be stored"):
            await logged.get_task_future(task_id)
        info = logged.get_task_info(task_id)
        history = await logged.history(task_id)
        assert await logged.get_task_future(await logged.add_task(echo, 1)) == "ran"

    assert info.error_type == "PayloadEncodingError"
    assert [e.type.value for e in history] == ["queued", "failed"]  # a hit: no start
