"""The memory store's own layout: small payloads kept as shared tuples, and
events appended from their fields, read back exactly."""

from __future__ import annotations

import pytest

from engine.events import EventType, utcnow
from engine.exceptions import ConcurrencyConflictError, StoreError
from engine.store.memory import MemoryEventStore


def _queue(store: MemoryEventStore, task_id: str, data: dict) -> int:
    return store.append_fields(task_id, 1, EventType.QUEUED, utcnow(), data)


async def test_equal_payloads_of_other_types_read_back_with_their_own_types():
    # 1 == 1.0 == True in Python: sharing equal payloads must not merge them.
    store = MemoryEventStore()
    values = [1, True, 1.0, "1", None, 0, False, 0.0, -0.0]
    for n, value in enumerate(values):
        _queue(store, f"t{n}", {"result": value})
        _queue(store, f"u{n}", {"result": value})

    for n, value in enumerate(values):
        for task_id in (f"t{n}", f"u{n}"):
            (event,) = await store.read_task(task_id)
            assert event.data == {"result": value}
            assert type(event.data["result"]) is type(value)
            assert repr(event.data["result"]) == repr(value)


async def test_repeated_atomic_payloads_are_stored_once():
    store = MemoryEventStore()
    for n in range(3):
        _queue(store, f"t{n}", {"task_type": "t", "priority": 0})

    assert store._datas[0] is store._datas[1] is store._datas[2]
    events = await store.read(0)
    assert [e.data for e in events] == [{"task_type": "t", "priority": 0}] * 3
    events[0].data["priority"] = 9  # a read event's payload is its own
    assert (await store.read(0))[1].data["priority"] == 0


async def test_append_fields_checks_versions_and_the_closed_store():
    store = MemoryEventStore()
    assert _queue(store, "t", {}) == 1
    with pytest.raises(ConcurrencyConflictError, match="next version in the log is 2"):
        store.append_fields("t", 3, EventType.STARTED, utcnow(), {})
    assert store.append_fields("t", 2, EventType.STARTED, utcnow(), {}) == 2
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        _queue(store, "u", {})
    assert await store.last_position() == 2


async def test_large_values_are_not_shared_and_stores_share_nothing():
    big = "x" * 1000
    one, other = MemoryEventStore(), MemoryEventStore()
    _queue(one, "a", {"result": big})
    _queue(one, "b", {"result": big})
    _queue(one, "c", {"result": 2**70})
    _queue(other, "a", {"result": "small"})
    _queue(one, "d", {"result": "small"})

    assert one._datas[0] is not one._datas[1]
    assert all(big not in key for key in one._shared)
    assert all(2**70 not in key for key in one._shared)
    assert other._datas[0] is not one._datas[3]
    assert (await one.read_task("c"))[0].data == {"result": 2**70}


class CountingStore(MemoryEventStore):
    """Counts the events it builds for readers."""

    built = 0

    def _event(self, position):
        self.built += 1
        return super()._event(position)


async def test_a_long_task_message_reads_only_its_own_event():
    # A message is rendered from its event and the context taken at publish
    # time, never by replaying the task's events (a long task made that
    # quadratic).
    import asyncio

    from engine import AsyncTaskWorker, EventManager

    manager = EventManager(max_recent_events=10)
    store = CountingStore()
    release = asyncio.Event()
    reported = asyncio.Event()

    async def chatty(n, progress_callback=None):
        progress_callback.min_interval_s = 0
        for k in range(n):
            progress_callback((k % 2) * 0.5 + 0.25)
        reported.set()
        await release.wait()
        raise ValueError("late failure")

    async with AsyncTaskWorker(store=store, event_manager=manager) as worker:
        task_id = await worker.add_task(chatty, 2_000, metadata={"group_id": "g"})
        await reported.wait()
        assert await store.last_position() == 2_002
        recent = manager.get_recent_events()
        built = store.built
        release.set()
        with pytest.raises(Exception, match="late failure"):
            await worker.get_task_future(task_id)
        last = manager.get_recent_events()[-1]

    assert built == 10
    assert [e["type"] for e in recent] == ["progress"] * 10
    assert recent[-1]["version"] == 2_002
    assert last["type"] == "failed"
    assert last["group_id"] == "g"
    assert last["progress"] == 0.75
    assert last["task_type"].endswith("chatty")
