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


async def test_a_task_state_is_read_back_as_of_any_of_its_events():
    store = MemoryEventStore()
    _queue(store, "t", {"task_type": "t", "metadata": {"group_id": "g"}})
    store.append_fields("t", 2, EventType.STARTED, utcnow(), {"attempt": 1})
    store.append_fields("t", 3, EventType.PROGRESS, utcnow(), {"progress": 0.5})
    store.append_fields("t", 4, EventType.FAILED, utcnow(), {"error": "x"})

    assert store.task_metadata_at(4) == {"group_id": "g"}
    assert store.task_values_at(2)["progress"] == 0.0
    assert store.task_values_at(4)["progress"] == 0.5
    assert store.task_values_at(4)["status"] == "failed"
    assert store.task_id_at(3) == "t"
