"""The PostgreSQL store beyond the shared contract: bad input, big batches,
conflict details, NOTIFY payloads."""

from __future__ import annotations

import asyncio
import math
import random

import asyncpg
import pytest

from engine.constants import EVENTS_UNIQUE_CONSTRAINT, NOTIFY_CHANNEL
from engine.events import EventType, TaskEvent, utcnow
from engine.exceptions import (
    ConcurrencyConflictError,
    PayloadEncodingError,
    StoreError,
)
from engine.store.postgres import MAX_TASK_ID_LENGTH, PostgresEventStore, asyncpg_dsn

pytestmark = pytest.mark.postgres


def _event(task_id: str, version: int = 1, **data) -> TaskEvent:
    return TaskEvent.build(None, task_id, version, EventType.QUEUED, utcnow(), data)


async def _round_trip(store: PostgresEventStore, **data) -> dict:
    await store.append([_event("t", **data)])
    (event,) = await store.read_task("t")
    return event.data


async def test_strings_with_nul_and_lone_surrogates_round_trip(pg_store):
    value = {
        "nul": "a\x00b",
        "surrogates": ["\ud800", "x\udfffy"],
        "keys": {"k\x00": 1, "\udc80": 2},
        "emoji": "\U0001f600",
    }

    assert await _round_trip(pg_store, value=value) == {"value": value}


async def test_nan_and_infinities_round_trip(pg_store):
    data = await _round_trip(
        pg_store, values=[float("nan"), float("inf"), float("-inf"), 1.5]
    )

    nan, inf, neg_inf, plain = data["values"]
    assert math.isnan(nan)
    assert (inf, neg_inf, plain) == (math.inf, -math.inf, 1.5)


async def test_five_megabyte_argument_round_trips(pg_store):
    rng = random.Random(5)
    big = "".join(rng.choice("abcdefghij\u00e9\u4e2d") for _ in range(5_000_000))

    assert await _round_trip(pg_store, args=[big]) == {"args": [big]}


async def test_longest_accepted_task_id_of_four_byte_characters_is_stored(
    pg_store,
):
    rng = random.Random(4)
    task_id = "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(512))
    task_id = task_id.replace("\U0010ffff", "x")[:MAX_TASK_ID_LENGTH]

    await pg_store.append([_event(task_id)])

    (event,) = await pg_store.read_task(task_id)
    assert event.task_id == task_id


@pytest.mark.parametrize(
    ("task_id", "words"),
    [
        ("x" * 10_000, "10,000 characters long"),
        ("a\x00b", "NUL character"),
        ("a\ud800b", "lone surrogate"),
    ],
)
async def test_unstorable_task_id_is_rejected_and_store_keeps_working(
    pg_store, task_id, words
):
    with pytest.raises(PayloadEncodingError, match=words) as caught:
        await pg_store.append([_event("fine"), _event(task_id)])

    assert caught.value.path == "task_id"
    assert await pg_store.last_position() == 0
    assert await pg_store.append([_event("fine")]) == [1]


async def test_unencodable_payload_names_the_argument(pg_store):
    with pytest.raises(PayloadEncodingError, match=r"event data\['args'\]\[1\]"):
        await pg_store.append([_event("t", args=[1, object()])])

    assert await pg_store.append([_event("t")]) == [1]


async def test_big_batch_positions_follow_input_order(pg_store):
    events = [_event(f"t{i:05}") for i in range(5_000)]

    positions = await pg_store.append(events)

    stored = await pg_store.read()
    assert [e.position for e in stored] == positions
    assert [e.task_id for e in stored] == [e.task_id for e in events]


async def test_conflict_keeps_constraint_name_and_sqlstate(pg_store):
    await pg_store.append([_event("a")])

    with pytest.raises(ConcurrencyConflictError) as caught:
        await pg_store.append([_event("a")])

    assert caught.value.constraint_name == EVENTS_UNIQUE_CONSTRAINT
    assert caught.value.sqlstate == "23505"
    assert isinstance(caught.value.__cause__, asyncpg.UniqueViolationError)


async def test_append_notifies_once_per_batch_with_the_last_position(
    pg_store, postgres_url
):
    payloads: asyncio.Queue[str] = asyncio.Queue()
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    await connection.add_listener(
        NOTIFY_CHANNEL, lambda *args: payloads.put_nowait(args[-1])
    )

    first = await pg_store.append([_event("a"), _event("b"), _event("c")])
    second = await pg_store.append([_event("d")])
    await connection.execute("SELECT 1")
    await connection.close()

    received = [payloads.get_nowait() for _ in range(payloads.qsize())]
    assert received == [str(first[-1]), str(second[-1])]


async def test_closed_store_refuses_appends_with_a_sentence(postgres_url):
    store = PostgresEventStore(postgres_url)
    await store.open()
    await store.close()

    with pytest.raises(StoreError, match=r"is closed; call 'await store.open\(\)'"):
        await store.append([_event("a")])


async def test_url_hides_the_password():
    store = PostgresEventStore("postgresql+asyncpg://app:secret@localhost/log")

    assert "secret" not in store.url
