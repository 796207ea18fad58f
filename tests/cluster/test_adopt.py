"""A node adopts a task its own claim started only when the claim's reply
never handed it over: never a task that already ran here."""

from __future__ import annotations

import asyncio

import pytest

from engine import AsyncTaskWorker, task
from engine.store.postgres import PostgresEventStore

pytestmark = pytest.mark.postgres

RUNS: dict[str, int] = {}


@task("adopt_counted")
async def counted(key: str) -> str:
    RUNS[key] = RUNS.get(key, 0) + 1
    return key


ENTERED = asyncio.Event()
RELEASE = asyncio.Event()


@task("adopt_held")
async def held(key: str) -> str:
    RUNS[key] = RUNS.get(key, 0) + 1
    ENTERED.set()
    await RELEASE.wait()
    return key


class GatedStore(PostgresEventStore):
    """Holds appends back while ``gate`` is clear (our own class, so a test
    can keep a task's end out of the log for a while)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = asyncio.Event()
        self.gate.set()

    async def append(self, events):
        await self.gate.wait()
        return await super().append(events)


async def test_a_late_adopter_does_not_run_a_task_that_already_ran_here(postgres_url):
    store = GatedStore(postgres_url)
    async with AsyncTaskWorker(max_workers=2, store=store) as worker:
        task_id = await worker.add_task("adopt_held", "once")
        await ENTERED.wait()
        store.gate.clear()  # the task's end stays out of the log
        RELEASE.set()
        assert await worker.get_task_future(task_id) == "once"

        # What the tail does on a 'started' event of ours that it saw while
        # the claim was in flight, when the adopter looks only after the
        # claim handed the task over and the task ran (it is no longer held
        # here, and the log does not have its end yet).
        await worker.cluster._adopt(task_id)
        store.gate.set()
        await worker._journal.flush()
        history = [e.type.value for e in await worker.history(task_id)]
    await store.close()  # a store passed in is the caller's to close

    assert RUNS["once"] == 1
    assert history == ["queued", "started", "completed"]


async def test_an_adopter_runs_a_started_task_no_claim_handed_over(postgres_url):
    async with AsyncTaskWorker(max_workers=2, store=postgres_url) as worker:
        await worker.cluster.stop_claiming()
        task_id = await worker.add_task("adopt_counted", "adopted")
        # A claim whose reply was lost: the started event is in the log and
        # in the projection, but no claim handed the task to this node.
        ((queued, started),) = await worker.store.claim(worker.node_id, 1)
        worker._journal.infos.fold(started)
        await worker.cluster._adopt(task_id)
        result = await worker.get_task_future(task_id)

    assert result == "adopted"
    assert RUNS["adopted"] == 1
