"""A cluster of node processes on one PostgreSQL database: exactly-once
runs, priorities, cancellation across nodes, lost nodes and a lost
listener."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from cluster_helpers import enqueue, last_events, poll

from engine import AsyncTaskWorker, task
from engine.registry import get_task_function

pytestmark = pytest.mark.postgres


def _spec(key: str, task_type: str, args: list, priority: int = 0) -> dict:
    data = {"task_type": task_type, "priority": priority, "args": args}
    return {"id": key, "data": data}


async def _all_terminal(db, count: int) -> bool:
    last = await last_events(db)
    done = [t for t, _ in last.values() if t in ("completed", "failed", "cancelled")]
    return len(done) == count


async def _started_events(db) -> list:
    return await db.fetch(
        "SELECT task_id, data::text FROM task_events WHERE type = 'started' "
        "ORDER BY position"
    )


@pytest.mark.timeout(120)
async def test_three_node_processes_run_each_of_2000_tasks_exactly_once(
    postgres_url, db, nodes
):
    for name in ("a", "b", "c"):
        await nodes.start(name, max_workers=20)
    specs = [_spec(f"t{i}", "side_effect", [f"t{i}"]) for i in range(2000)]

    await enqueue(postgres_url, specs)
    await poll(lambda: _all_terminal(db, 2000), timeout_s=90, every_s=0.2)
    for name in ("a", "b", "c"):
        await nodes.stop(name)

    runs = await db.fetch("SELECT runs, node_id FROM side_effects")
    started = await _started_events(db)
    last = await last_events(db)
    assert len(runs) == 2000
    assert {row["runs"] for row in runs} == {1}
    assert len(started) == 2000
    assert {t for t, _ in last.values()} == {"completed"}
    assert len({row["node_id"] for row in runs}) >= 2
    assert await db.fetchval("SELECT count(*) FROM task_nodes") == 0
    assert await db.fetchval("SELECT count(*) FROM task_runnable") == 0
    assert await db.fetchval("SELECT count(*) FROM task_leases") == 0


@pytest.mark.timeout(90)
async def test_priorities_hold_across_nodes(postgres_url, db, nodes):
    specs = [
        _spec(f"p{i}", "side_effect", [f"p{i}"], priority=(i * 7) % 5)
        for i in range(60)
    ]
    order = {spec["id"]: (spec["data"]["priority"], i) for i, spec in enumerate(specs)}
    for name in ("a", "b", "c"):
        await nodes.start(name, max_workers=1)

    await enqueue(postgres_url, specs)
    await poll(lambda: _all_terminal(db, 60), timeout_s=60)

    claimed = [order[row["task_id"]] for row in await _started_events(db)]
    nodes_used = {
        json.loads(row["data"])["node_id"] for row in await _started_events(db)
    }
    assert claimed == sorted(claimed)
    assert len(nodes_used) >= 2


@task("sleepy")
async def _sleepy_here(key: str, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return key


@task("side_effect")
async def _side_effect_here(key: str) -> str:
    return key


@pytest.mark.timeout(90)
async def test_task_added_on_one_node_runs_and_is_cancelled_on_another(
    postgres_url, db, nodes
):
    here = AsyncTaskWorker(max_workers=1, store=postgres_url, node_id="here")
    await here.start()
    try:
        blocker = await here.add_task("sleepy", "blocker", 60)
        await poll(lambda: _runs_on(db, "blocker", "here"), timeout_s=10)
        await nodes.start("there", max_workers=4)

        done_id = await here.add_task("side_effect", "done")
        result = await asyncio.wait_for(here.get_task_future(done_id), 20)
        slow_id = await here.add_task("sleepy", "slow", 60)
        future = here.get_task_future(slow_id)
        await poll(lambda: _started_on(db, "slow", "there"), timeout_s=20)
        cancelled = await here.cancel_task(slow_id)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(future, 20)
        await here.cancel_task(blocker)
    finally:
        await here.stop()
    await nodes.stop("there")

    history = await db.fetch(
        "SELECT type FROM task_events WHERE task_id = $1 ORDER BY version", slow_id
    )
    assert result == "done"
    assert cancelled is True
    assert [row["type"] for row in history] == ["queued", "started", "cancelled"]
    assert await db.fetchval("SELECT count(*) FROM side_effects WHERE key='slow'") == 0
    assert get_task_function("sleepy") is _sleepy_here


async def _runs_on(db, key: str, node_id: str) -> bool:
    row = await db.fetchrow(
        "SELECT data::text FROM task_events WHERE type = 'started' "
        "AND task_id IN (SELECT task_id FROM task_events WHERE data->'args'->>0 = $1)",
        key,
    )
    return row is not None and json.loads(row[0])["node_id"] == node_id


async def _started_on(db, key: str, node_id: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM side_starts WHERE key = $1 AND node_id = $2",
            key,
            node_id,
        )
    )


@pytest.mark.timeout(90)
async def test_killed_node_tasks_are_requeued_within_the_lease_as_attempt_2(
    postgres_url, db, nodes
):
    await nodes.start("doomed", max_workers=5)
    await enqueue(
        postgres_url, [_spec(f"k{i}", "sleepy", [f"k{i}", 2.0]) for i in range(5)]
    )
    await poll(lambda: _count(db, "side_starts", 5), timeout_s=20)
    await nodes.start("survivor", max_workers=5)

    nodes.kill("doomed")
    killed_at = time.monotonic()
    await poll(lambda: _requeued(db, 5), timeout_s=15)
    requeued_after_s = time.monotonic() - killed_at
    await poll(lambda: _all_terminal(db, 5), timeout_s=30)

    last = await last_events(db)
    started = [json.loads(row["data"]) for row in await _started_events(db)]
    runs = await db.fetch("SELECT runs, node_id FROM side_effects")
    assert {t for t, _ in last.values()} == {"completed"}
    assert sorted((s["attempt"], s["node_id"]) for s in started) == (
        [(1, "doomed")] * 5 + [(2, "survivor")] * 5
    )
    assert {(row["runs"], row["node_id"]) for row in runs} == {(1, "survivor")}
    assert requeued_after_s < 2.0 + 0.3 * 2 + 3.0


async def _count(db, table: str, wanted: int) -> bool:
    return await db.fetchval(f"SELECT count(*) FROM {table}") >= wanted


async def _requeued(db, wanted: int) -> bool:
    count = await db.fetchval(
        "SELECT count(*) FROM task_events WHERE type = 'queued' "
        "AND data->>'reason' = 'worker_lost'"
    )
    return count >= wanted


@pytest.mark.timeout(60)
async def test_live_slow_task_is_never_taken_from_its_node(postgres_url, db, nodes):
    await nodes.start("slowpoke", max_workers=2)
    await nodes.start("watcher", max_workers=2)

    await enqueue(postgres_url, [_spec("long", "sleepy", ["long", 5.0])])
    await poll(lambda: _all_terminal(db, 1), timeout_s=30)

    started = await _started_events(db)
    assert len(started) == 1
    assert json.loads(started[0]["data"])["attempt"] == 1
    assert await db.fetchval("SELECT runs FROM side_effects WHERE key='long'") == 1


@pytest.mark.timeout(90)
async def test_nodes_keep_working_when_the_listener_backend_is_terminated(
    postgres_url, db, nodes
):
    await nodes.start("a", max_workers=10)
    await nodes.start("b", max_workers=10)

    for round_ in range(3):
        await enqueue(
            postgres_url,
            [
                _spec(f"r{round_}-{i}", "side_effect", [f"r{round_}-{i}"])
                for i in range(200)
            ],
        )
        terminated = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'taskengine_listener' "
            "AND datname = current_database()"
        )
        assert terminated == 2
    await poll(lambda: _all_terminal(db, 600), timeout_s=60)
    await enqueue(postgres_url, [_spec("after", "side_effect", ["after"])])
    await poll(lambda: _all_terminal(db, 601), timeout_s=20)

    runs = await db.fetch("SELECT runs FROM side_effects")
    assert len(runs) == 601
    assert {row["runs"] for row in runs} == {1}
