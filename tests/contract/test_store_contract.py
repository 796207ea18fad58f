"""One contract for every EventStore backend (the fixture lists them)."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid

import pytest

from engine.events import EventType, TaskEvent, utcnow
from engine.exceptions import ConcurrencyConflictError


def _event(task_id: str, version: int, type_: EventType = EventType.QUEUED, **data):
    return TaskEvent.build(None, task_id, version, type_, utcnow(), data)


async def test_append_assigns_increasing_positions(store):
    first = await store.append([_event("a", 1), _event("b", 1)])
    second = await store.append([_event("a", 2, EventType.STARTED)])

    assert first[0] < first[1] < second[0]
    assert await store.last_position() == second[0]


async def test_read_returns_events_after_position_in_order(store):
    positions = await store.append([_event(f"t{i}", 1) for i in range(5)])

    events = await store.read(after=positions[1])

    assert [e.position for e in events] == positions[2:]
    assert [e.task_id for e in events] == ["t2", "t3", "t4"]


async def test_read_honours_limit(store):
    positions = await store.append([_event(f"t{i}", 1) for i in range(5)])

    events = await store.read(after=0, limit=2)

    assert [e.position for e in events] == positions[:2]


async def test_read_task_returns_versions_in_order(store):
    await store.append([_event("a", 1), _event("b", 1)])
    await store.append([_event("a", 2, EventType.STARTED)])
    await store.append([_event("a", 3, EventType.COMPLETED, result=5)])

    events = await store.read_task("a")

    assert [e.version for e in events] == [1, 2, 3]
    assert events[-1].type is EventType.COMPLETED
    assert events[-1].data == {"result": 5}


async def test_append_rejects_duplicate_version(store):
    await store.append([_event("a", 1)])

    with pytest.raises(ConcurrencyConflictError):
        await store.append([_event("a", 1)])


async def test_append_is_all_or_nothing(store):
    await store.append([_event("a", 1)])
    before = await store.last_position()

    with pytest.raises(ConcurrencyConflictError):
        await store.append([_event("b", 1), _event("a", 1)])

    assert await store.last_position() == before
    assert await store.read_task("b") == []


async def test_payload_round_trips_values_json_lacks(store):
    payload = {
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        "id": uuid.UUID(int=7),
        "amount": decimal.Decimal("10.50"),
        "raw": b"\x00\xff",
        "pair": (1, "1"),
        "tags": {"x", "y"},
        "nul": "a\x00b",
        "surrogate": "\ud800",
        "nan": float("inf"),
        "int_keys": {1: "one"},
        "tag_lookalike": {"$te": ["s", "x"]},
    }
    await store.append([_event("a", 1, payload=payload)])

    (event,) = await store.read_task("a")

    assert event.data["payload"] == payload
    assert type(event.data["payload"]["pair"]) is tuple


async def test_times_are_aware_utc(store):
    await store.append([_event("a", 1)])

    (event,) = await store.read_task("a")

    assert event.at.tzinfo is not None
    assert event.at.utcoffset() == dt.timedelta(0)


async def test_concurrent_appends_keep_every_event_once(store):
    async def writer(prefix: str) -> None:
        for i in range(20):
            await store.append([_event(f"{prefix}{i}", 1)])

    await asyncio.gather(*(writer(p) for p in "abcd"))

    events = await store.read()
    assert len({e.task_id for e in events}) == 80
    positions = [e.position for e in events]
    assert positions == sorted(positions)


async def test_flat_payloads_read_back_as_equal_fresh_dicts(store):
    payload = {"attempt": 2, "node_id": "n1", "ratio": 0.5, "done": None}
    await store.append([_event("a", 1, **payload)])

    first = (await store.read_task("a"))[0].data
    first["attempt"] = 99
    second = (await store.read_task("a"))[0].data

    assert second == payload


async def test_integers_beyond_64_bits_and_floats_keep_their_type(store):
    payload = {"big": 2**70, "negative": -(2**65), "float": 1.5, "small": 7}
    await store.append([_event("a", 1, **payload)])

    (event,) = await store.read_task("a")

    assert event.data == payload
    assert type(event.data["big"]) is int
    assert type(event.data["float"]) is float


async def test_floats_read_back_as_the_same_floats(store):
    # jsonb keeps a number's digits, not its type: 1e16 would come back as
    # an int and -0.0 as 0.0 unless the codec wraps them.
    floats = [1e16, -1e16, 1e20, 1.5e300, 9007199254740992.0, 1e15, -0.0, 0.0,
              1.0, 0.1, 1e-7, 5e-324, float("nan"), float("-inf")]  # fmt: skip
    await store.append([_event("a", 1, values=floats, alone=-0.0)])

    (event,) = await store.read_task("a")
    (fields,) = [f async for batch in store.iter_fields() for f in batch]

    for data in (event.data, fields["data"]):
        read = data["values"] + [data["alone"]]
        for wrote, got in zip(floats + [-0.0], read, strict=True):
            assert type(got) is float
            assert repr(got) == repr(wrote)


async def test_iter_fields_gives_every_event_as_its_fields_in_batches(store):
    await store.append([_event(f"f{i}", 1, payload=[i, "x"]) for i in range(7)])
    await store.append([_event("f0", 2, EventType.STARTED, attempt=1)])
    expected = await store.read()

    batches = [batch async for batch in store.iter_fields(0, batch_size=3)]
    fields = [e for batch in batches for e in batch]

    assert [len(batch) for batch in batches] == [3, 3, 2]
    assert fields == [event.__dict__ for event in expected]
    assert fields[-1]["type"] is EventType.STARTED
