"""The journal's append loop through a store that fails the way a database
does: a reply lost after the commit, and an outage mid-batch. Nothing may be
lost, duplicated or reported as rejected."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine import AsyncTaskWorker
from engine.exceptions import (
    ConcurrencyConflictError,
    PayloadEncodingError,
    StoreError,
    StoreUnavailableError,
)
from engine.store.memory import MemoryEventStore


class RemoteLikeStore(MemoryEventStore):
    """The memory store, appending only through the awaited path (as the
    PostgreSQL store does), with scripted failures."""

    append_now = None  # type: ignore[assignment]
    append_fields = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.lose_reply_of_append = 0
        self.fail_next = 0
        self.calls = 0

    async def append(self, events):
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailableError("The store is restarting.")
        positions = MemoryEventStore.append_now(self, events)
        if self.calls == self.lose_reply_of_append:
            raise StoreUnavailableError("The reply was lost after the commit.")
        return positions


async def answer():
    return 42


async def test_an_append_whose_reply_was_lost_is_not_written_twice(caplog):
    store = RemoteLikeStore()
    store.lose_reply_of_append = 2
    caplog.set_level(logging.INFO, logger="engine.journal")

    async with AsyncTaskWorker(store=store) as worker:
        task_id = await worker.add_task(answer)
        result = await worker.get_task_future(task_id)
        history = await worker.history(task_id)

    assert result == 42
    assert [e.version for e in history] == [1, 2, 3]
    assert [e.type.value for e in history] == ["queued", "started", "completed"]
    assert "append_rejected" not in {
        r.action for r in caplog.records if hasattr(r, "action")
    }


class ConflictThenOutage(RemoteLikeStore):
    """Refuses the first multi-task batch as a conflict, then is unavailable
    for the first task appended alone."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.step = 0

    async def append(self, events):
        if self.armed:
            self.step += 1
            if self.step == 1 and len({e.task_id for e in events}) > 1:
                raise ConcurrencyConflictError("Simulated conflict of a batch.")
            if self.step == 2:
                raise StoreUnavailableError("The store is restarting.")
        return await super().append(events)


async def test_an_outage_while_isolating_a_batch_loses_no_event():
    store = ConflictThenOutage()

    async with AsyncTaskWorker(store=store) as worker:
        first = await worker.add_task(answer)
        await worker.get_task_future(first)
        await worker.history(first)  # flushes: the next append is add_tasks'
        store.armed = True
        ids = await worker.add_tasks([{"task_func": answer} for _ in range(3)])
        results = await worker.wait_for_tasks(ids, timeout=10)
        histories = [await worker.history(task_id) for task_id in ids]

    assert store.step >= 2
    assert results == [42, 42, 42]
    for history in histories:
        assert [e.type.value for e in history] == ["queued", "started", "completed"]


class RefusesOneTask(RemoteLikeStore):
    """Refuses every append holding an event of task "bad" with ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def append(self, events):
        if any(event.task_id == "bad" for event in events):
            raise self.error
        return await super().append(events)


async def test_a_version_conflict_is_a_warning_and_other_refusals_errors(caplog):
    caplog.set_level(logging.INFO, logger="engine.journal")
    levels = []
    for error in (
        ConcurrencyConflictError("Task 't' cannot take version 1."),
        StoreError("The store refused the batch."),
    ):
        caplog.clear()
        async with AsyncTaskWorker(store=RefusesOneTask(error)) as worker:
            with pytest.raises(Exception):  # noqa: B017 - the caller hears of it
                await worker.add_task(answer, task_id="bad")
            assert await worker.get_task_future(await worker.add_task(answer)) == 42
        levels += [
            (r.levelno, r.exc_info is not None)
            for r in caplog.records
            if getattr(r, "action", None) == "append_rejected"
        ]

    assert levels == [(logging.WARNING, False), (logging.ERROR, True)]


class InPlaceRefusesOneTask(MemoryEventStore):
    """Appends in place (as SQLite does) and fails, as a store's writer can
    with a value it cannot write, on any batch holding task "bad"."""

    append_fields = None  # type: ignore[assignment]

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def append_now(self, events):
        if any(event.task_id == "bad" for event in events):
            raise self.error
        return super().append_now(events)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize(
    "error",
    [PayloadEncodingError("event data is nested too deeply"), RuntimeError("bug")],
)
async def test_a_writer_error_outside_the_store_family_costs_one_task(in_place, error):
    store = InPlaceRefusesOneTask(error) if in_place else RefusesOneTask(error)
    async with AsyncTaskWorker(store=store) as worker:
        bad = asyncio.create_task(worker.add_task(answer, task_id="bad"))
        good = asyncio.create_task(worker.add_task(answer, task_id="good"))
        outcomes = await asyncio.wait_for(
            asyncio.gather(bad, good, return_exceptions=True), 10
        )
        later = await worker.add_task(answer)
        assert await asyncio.wait_for(worker.get_task_future(later), 10) == 42
        history = await worker.history("good")

    assert type(outcomes[0]) is type(error)
    assert outcomes[1] == "good"
    assert [e.type.value for e in history] == ["queued", "started", "completed"]
