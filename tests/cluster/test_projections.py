"""The runnable and lease tables: written with the events they mirror and
rebuilt from the log alone."""

from __future__ import annotations

import pytest

from engine.events import EventType, TaskEvent, utcnow
from engine.store.postgres import PostgresEventStore

pytestmark = pytest.mark.postgres


def _event(task_id: str, version: int, type_: EventType, **data) -> TaskEvent:
    return TaskEvent.build(None, task_id, version, type_, utcnow(), data)


async def _tables(store: PostgresEventStore) -> tuple[list, list]:
    runnable = await store.query(
        "SELECT task_id, priority, version, attempt FROM task_runnable ORDER BY 1"
    )
    leases = await store.query(
        "SELECT task_id, node_id, attempt FROM task_leases ORDER BY 1"
    )
    return [tuple(r) for r in runnable], [tuple(r) for r in leases]


async def test_runnable_and_lease_tables_are_rebuilt_from_the_log(postgres_url):
    store = PostgresEventStore(postgres_url)
    await store.open()
    queued = {"task_type": "t", "priority": 3}
    await store.append(
        [
            _event("waiting", 1, EventType.QUEUED, **queued),
            _event("running", 1, EventType.QUEUED, **queued),
            _event("running", 2, EventType.STARTED, attempt=1, node_id="n1"),
            _event("done", 1, EventType.QUEUED, **queued),
            _event("finished", 1, EventType.QUEUED, **queued),
            _event("failing", 1, EventType.QUEUED, **queued),
            _event("finished", 2, EventType.STARTED, attempt=1, node_id="n1"),
        ]
    )
    await store.append(
        [
            _event("running", 3, EventType.PROGRESS, progress=0.5),
            _event("done", 2, EventType.CANCELLED, error="cancelled"),
            _event("retry", 1, EventType.QUEUED, **queued),
            _event("retry", 2, EventType.STARTED, attempt=1, node_id="n2"),
            _event("retry", 3, EventType.QUEUED, priority=1, attempt=2),
            _event("finished", 3, EventType.PROGRESS, progress=0.5),
            _event("finished", 4, EventType.COMPLETED, result=None),
            _event("failing", 2, EventType.FAILED, error="lost"),
        ]
    )
    written = await _tables(store)

    await store.query("DELETE FROM task_runnable")
    await store.query("DELETE FROM task_leases")
    await store.rebuild_projections()
    rebuilt = await _tables(store)
    await store.close()

    assert written == (
        [("retry", 1, 3, 2), ("waiting", 3, 1, 1)],
        [("running", "n1", 1)],
    )
    assert rebuilt == written


async def test_claim_takes_by_priority_and_writes_started_events(postgres_url):
    store = PostgresEventStore(postgres_url)
    await store.open()
    await store.append(
        [
            _event(f"c{i}", 1, EventType.QUEUED, task_type="t", priority=i % 2)
            for i in range(4)
        ]
    )

    first = await store.claim("n1", 3)
    second = await store.claim("n2", 3)
    runnable, leases = await _tables(store)
    await store.close()

    assert [started.task_id for _, started in first] == ["c0", "c2", "c1"]
    assert [(q.version, s.version) for q, s in first] == [(1, 2)] * 3
    assert first[0][1].data == {"attempt": 1, "node_id": "n1"}
    assert [started.task_id for _, started in second] == ["c3"]
    assert runnable == []
    assert {lease[:2] for lease in leases} == {
        ("c0", "n1"),
        ("c1", "n1"),
        ("c2", "n1"),
        ("c3", "n2"),
    }
