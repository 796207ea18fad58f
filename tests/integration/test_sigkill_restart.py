"""A worker process killed with SIGKILL in the middle of a run: a new worker
on the same SQLite log finishes every task, runs the killed running ones
again as attempt 2, and loses or duplicates none."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections import Counter

import pytest

from engine import AsyncTaskWorker, EventType, TaskStatus, register_task
from engine.registry import unregister_task
from engine.store.sqlite import SQLiteEventStore

TASK_TYPE = "sigkill_restart_job"
FAST = ["fast-0", "fast-1"]
HELD = ["held-0", "held-1"]
QUEUED = ["queued-0", "queued-1", "queued-2", "queued-3"]

# The doomed worker: two slots; the fast tasks finish, the held ones block
# until the process dies, the rest wait in the queue. It writes "ready" once
# all of that is durable in the log.
WORKER_SCRIPT = textwrap.dedent(
    f"""
    import asyncio
    import os
    import sys

    from engine import AsyncTaskWorker, task

    DATABASE, MARKS = sys.argv[1], sys.argv[2]
    held_in = asyncio.Event()
    held_count = 0


    def mark(line):
        fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    @task({TASK_TYPE!r})
    async def job(name, hold):
        global held_count
        mark("started " + name)
        if hold:
            held_count += 1
            if held_count == 2:
                held_in.set()
            await asyncio.Event().wait()
        mark("done " + name)
        return name.upper()


    async def main():
        worker = AsyncTaskWorker(store=DATABASE, max_workers=2)
        await worker.start()
        fast = [await worker.add_task({TASK_TYPE!r}, n, False, task_id=n)
                for n in {FAST!r}]
        await worker.wait_for_tasks(fast)
        for n in {HELD!r}:
            await worker.add_task({TASK_TYPE!r}, n, True, task_id=n)
        await held_in.wait()
        for n in {QUEUED!r}:
            await worker.add_task({TASK_TYPE!r}, n, False, task_id=n)
        for n in {FAST + HELD + QUEUED!r}:
            await worker.history(n)  # flushes the journal
        mark("ready " + str(os.getpid()))
        await asyncio.Event().wait()


    asyncio.run(main())
    """
)


def read_marks(path):
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


async def wait_for_ready(process, marks, deadline_s=30.0):
    """Bounded poll on the external process's marks file."""
    give_up_at = time.monotonic() + deadline_s
    while time.monotonic() < give_up_at:
        lines = read_marks(marks)
        if any(line.startswith("ready") for line in lines):
            return lines
        if process.returncode is not None:
            _, err = await process.communicate()
            pytest.fail(f"The worker process exited early: {err.decode()}")
        await asyncio.sleep(0.02)
    pytest.fail(f"The worker process never got ready; marks: {read_marks(marks)}")


@pytest.fixture
def restarted_runs():
    runs: list[str] = []

    async def job(name, hold):
        runs.append(name)
        return name.upper()

    register_task(TASK_TYPE, job)
    yield runs
    unregister_task(TASK_TYPE)


async def test_sigkilled_worker_tasks_all_finish_after_restart(
    tmp_path, restarted_runs
):
    database = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    marks = tmp_path / "marks.txt"
    script = tmp_path / "doomed_worker.py"
    script.write_text(WORKER_SCRIPT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        database,
        str(marks),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        lines_at_kill = await wait_for_ready(process, marks)
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.communicate(), 10)

    async with AsyncTaskWorker(store=database, max_workers=2) as worker:
        restored = {t: worker.get_task_info(t).status for t in FAST}
        results = await worker.wait_for_tasks(FAST + HELD + QUEUED, timeout=30)
        histories = {t: await worker.history(t) for t in FAST + HELD + QUEUED}
        infos = {t: worker.get_task_info(t) for t in FAST + HELD + QUEUED}
    store = SQLiteEventStore(database, exclusive=False)
    await store.open()
    try:
        whole_log = await store.read()
    finally:
        await store.close()

    assert process.returncode == -signal.SIGKILL
    assert {f"started {t}" for t in FAST + HELD} <= set(lines_at_kill)
    assert not any(line.startswith("started queued") for line in lines_at_kill)
    assert restored == {t: TaskStatus.COMPLETED for t in FAST}
    assert results == [t.upper() for t in FAST + HELD + QUEUED]
    assert all(i.status is TaskStatus.COMPLETED for i in infos.values())
    assert sorted(restarted_runs) == sorted(HELD + QUEUED)

    def shape(task_id):
        return [(e.type, e.data.get("attempt")) for e in histories[task_id]]

    for task_id in FAST:
        assert [e.type for e in histories[task_id]] == [
            EventType.QUEUED,
            EventType.STARTED,
            EventType.COMPLETED,
        ]
    for task_id in HELD:
        assert shape(task_id) == [
            (EventType.QUEUED, None),
            (EventType.STARTED, 1),
            (EventType.QUEUED, 2),
            (EventType.STARTED, 2),
            (EventType.COMPLETED, None),
        ]
        assert histories[task_id][2].data["reason"] == "worker_lost"
        assert infos[task_id].attempt == 2
    for task_id in QUEUED:
        assert shape(task_id) == [
            (EventType.QUEUED, None),
            (EventType.STARTED, 1),
            (EventType.COMPLETED, None),
        ]
        assert infos[task_id].attempt == 1

    per_task = Counter(e.task_id for e in whole_log)
    assert set(per_task) == set(FAST + HELD + QUEUED)
    for task_id, history in histories.items():
        assert per_task[task_id] == len(history)
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        terminal = [e for e in history if e.type is EventType.COMPLETED]
        assert len(terminal) == 1
    positions = [e.position for e in whole_log]
    assert positions == sorted(set(positions))
