"""Progress: visible while a task runs, throttled into the log, the last
value (and 1.0) always kept; ProgressReporter on its own."""

from __future__ import annotations

import asyncio

import pytest
from worker_support import gated

from engine import EventType, TaskStatus
from engine.progress import ProgressReporter


def progress_values(history):
    return [e.data["progress"] for e in history if e.type is EventType.PROGRESS]


async def test_progress_visible_while_task_runs(make_worker):
    worker = await make_worker()
    reported, release = asyncio.Event(), asyncio.Event()

    async def halfway(progress_callback=None):
        progress_callback(0.5)
        reported.set()
        await release.wait()
        return "done"

    task_id = await worker.add_task(halfway)
    await reported.wait()
    during = worker.get_task_info(task_id)
    release.set()
    await worker.get_task_future(task_id)

    assert during.status is TaskStatus.RUNNING
    assert during.progress == 0.5
    assert worker.get_task_info(task_id).progress == 1.0
    assert 0.5 in progress_values(await worker.history(task_id))


async def test_progress_is_zero_before_task_reports(make_worker):
    worker = await make_worker()
    wait_on, gate, entered = gated()

    task_id = await worker.add_task(wait_on)
    await entered.wait()

    assert worker.get_task_info(task_id).progress == 0.0
    gate.set()
    await worker.get_task_future(task_id)


async def test_rapid_progress_reports_are_throttled_keeping_final_one(
    make_worker,
):
    worker = await make_worker()

    async def chatty(progress_callback=None):
        for step in range(1, 1001):
            progress_callback(step / 1000)
        return "done"

    task_id = await worker.add_task(chatty)
    await worker.get_task_future(task_id)

    values = progress_values(await worker.history(task_id))
    assert 1 <= len(values) <= 5
    assert values[-1] == 1.0
    assert values == sorted(values)


async def test_throttled_reports_across_awaits_stay_few(make_worker):
    worker = await make_worker()

    async def chatty(progress_callback=None):
        for step in range(1, 201):
            progress_callback(step / 200)
            await asyncio.sleep(0)
        return "done"

    task_id = await worker.add_task(chatty)
    await worker.get_task_future(task_id)

    values = progress_values(await worker.history(task_id))
    assert len(values) <= 20
    assert values[-1] == 1.0


async def test_held_back_value_is_written_after_interval(make_worker):
    worker = await make_worker()
    subscriber_id, queue = worker.events.subscribe()
    release = asyncio.Event()

    async def two_quick(progress_callback=None):
        progress_callback(0.3)
        progress_callback(0.35)
        await release.wait()

    task_id = await worker.add_task(two_quick)
    seen = []
    while 0.35 not in seen:
        message = await asyncio.wait_for(queue.get(), 5)
        if message.get("task_id") == task_id and message["type"] == "progress":
            seen.append(message["progress"])
    during = worker.get_task_info(task_id)
    release.set()
    await worker.get_task_future(task_id)
    worker.events.unsubscribe(subscriber_id)

    assert seen == [0.3, 0.35]
    assert during.progress == 0.35


async def test_progress_written_from_a_thread_reaches_task_info(make_worker):
    worker = await make_worker()

    async def from_thread(progress_callback=None):
        await asyncio.to_thread(progress_callback, 0.25)
        return "done"

    task_id = await worker.add_task(from_thread)
    await worker.get_task_future(task_id)

    assert 0.25 in progress_values(await worker.history(task_id))


async def test_task_without_progress_parameter_runs(make_worker):
    worker = await make_worker()

    async def quiet(value):
        return value

    task_id = await worker.add_task(quiet, 3)

    assert await worker.get_task_future(task_id) == 3
    assert progress_values(await worker.history(task_id)) == []


async def test_late_progress_after_task_ended_is_ignored(make_worker):
    worker = await make_worker()
    kept = []

    async def leaks_callback(progress_callback=None):
        kept.append(progress_callback)
        return "done"

    task_id = await worker.add_task(leaks_callback)
    await worker.get_task_future(task_id)
    before = await worker.history(task_id)

    kept[0](0.2)
    for _ in range(5):
        await asyncio.sleep(0)

    assert len(await worker.history(task_id)) == len(before)
    assert worker.get_task_info(task_id).progress == 1.0


@pytest.mark.parametrize("ending", ["fails", "is_cancelled"])
async def test_a_value_held_back_is_written_before_the_task_ends(make_worker, ending):
    worker = await make_worker()
    reported = asyncio.Event()

    async def reports_then_ends(progress_callback=None):
        progress_callback(0.1)
        progress_callback(0.5)  # held back by the throttle
        reported.set()
        if ending == "fails":
            raise ValueError("boom")
        await asyncio.Event().wait()

    task_id = await worker.add_task(reports_then_ends)
    await reported.wait()
    if ending == "is_cancelled":
        assert await worker.cancel_task(task_id)
    with pytest.raises(BaseException):  # noqa: B017 - failed or cancelled
        await worker.get_task_future(task_id)
    history = await worker.history(task_id)

    assert progress_values(history) == [0.1, 0.5]
    assert history[-1].type in (EventType.FAILED, EventType.CANCELLED)
    assert worker.get_task_info(task_id).progress == 0.5


# ProgressReporter on its own


async def _reporter(**options):
    written = []
    changed = asyncio.Event()

    def emit(value):
        written.append(value)
        changed.set()

    return ProgressReporter("t", emit, **options), written, changed


async def test_reporter_writes_first_value_at_once():
    reporter, written, _ = await _reporter()

    reporter(0.2)

    assert written == [0.2]


async def test_reporter_always_writes_one():
    reporter, written, _ = await _reporter(min_interval_s=60)

    reporter(0.2)
    reporter(0.99)
    reporter(1.0)

    assert written == [0.2, 1.0]


async def test_reporter_ignores_moves_smaller_than_min_delta():
    reporter, written, _ = await _reporter(min_interval_s=0, min_delta=0.1)

    reporter(0.5)
    reporter(0.55)
    reporter(0.7)

    assert written == [0.5, 0.7]


async def test_reporter_flushes_held_value_after_interval():
    reporter, written, changed = await _reporter(min_interval_s=0.05)
    reporter(0.1)
    changed.clear()

    reporter(0.4)
    held_at_once = list(written)
    await asyncio.wait_for(changed.wait(), 5)

    assert held_at_once == [0.1]
    assert written == [0.1, 0.4]


@pytest.mark.parametrize(("value", "expected"), [(1.5, 1.0), (-0.5, 0.0), (2, 1.0)])
async def test_reporter_clamps_out_of_range_values(value, expected):
    reporter, written, _ = await _reporter(min_interval_s=0)
    reporter(0.5)

    reporter(value)

    assert written[-1] == expected


@pytest.mark.parametrize("value", ["0.5", None, True, [0.5]])
async def test_reporter_rejects_non_numbers(value):
    reporter, written, _ = await _reporter()

    with pytest.raises(TypeError, match="Progress"):
        reporter(value)

    assert written == []


async def test_reporter_rejects_nan():
    reporter, written, _ = await _reporter()

    with pytest.raises(ValueError, match="NaN"):
        reporter(float("nan"))

    assert written == []


async def test_reporter_writes_nothing_after_close():
    reporter, written, _ = await _reporter(min_interval_s=0.01)
    reporter(0.1)
    reporter(0.5)

    reporter.close()
    reporter(1.0)
    for _ in range(5):
        await asyncio.sleep(0)

    assert written == [0.1]


async def test_reporter_called_from_thread_writes_on_loop():
    reporter, written, changed = await _reporter()

    await asyncio.to_thread(reporter, 0.6)
    await asyncio.wait_for(changed.wait(), 5)

    assert written == [0.6]


async def test_quick_start_style_progress_reaches_one(make_worker):
    worker = await make_worker()

    async def process_data(data, progress_callback=None):
        result = []
        for i, item in enumerate(data):
            result.append(item * 2)
            if progress_callback:
                progress_callback((i + 1) / len(data))
            await asyncio.sleep(0)
        return result

    task_id = await worker.add_task(process_data, [1, 2, 3, 4, 5])
    result = await worker.get_task_future(task_id)

    assert result == [2, 4, 6, 8, 10]
    values = progress_values(await worker.history(task_id))
    assert values[0] == 0.2
    assert values[-1] == 1.0
