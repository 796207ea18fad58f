"""Start-up: rebuild the projection from the log, then resume what the last
process left unfinished.

A task whose last event is ``queued`` is queued again as it was. A task whose
last event is ``started`` or ``progress`` lost its worker: it is queued again
as a new attempt, or fails with an error saying so once ``max_attempts``
runs were spent. A task whose type this process cannot find fails with an
error naming the type. Nothing queued is dropped silently.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from engine.events import EventType
from engine.executor import run_from_queued
from engine.registry import find_task
from engine.store.base import GC_PAUSE_MIN_ROWS, collector_paused
from projections.index import IndexLoader
from projections.task_info import TaskInfo, TaskStatus

if TYPE_CHECKING:
    from engine.worker import AsyncTaskWorker

__all__ = ["replay_and_resume"]

logger = logging.getLogger(__name__)


async def replay_and_resume(worker: AsyncTaskWorker) -> dict[str, int]:
    """Fold the whole log into ``worker``'s projection and resume unfinished
    tasks; returns counts for the log line and the tests."""
    started_s = time.monotonic()
    journal = worker._journal
    unfinished: dict[str, dict[str, Any]] = {}
    events = position = 0
    # Each event as a dict of its fields, folded in place into one dict per
    # unfinished task: no TaskEvent or TaskInfo per event of the log.
    loader = IndexLoader(journal.infos)
    # The collector stays paused for the whole replay rather than per batch:
    # a replay allocates a few containers per event and frees no cycles, and
    # each re-enabling would walk what the batch left behind again.
    with collector_paused(GC_PAUSE_MIN_ROWS):
        async for batch in worker.store.iter_fields():
            events += len(batch)
            position = batch[-1]["position"] or position
            for e in batch:
                _track(unfinished, e)
                loader.feed(e)
    loader.finish()
    counts = {"events": events, "tasks": len(journal.infos), "requeued": 0}
    counts.update(retried=0, failed=0, position=position)
    if worker.cluster is not None:
        # Queued tasks wait in the runnable table for any node, and started
        # ones belong to their node until its lease runs out (engine/cluster).
        unfinished.clear()
    for task_id, queued in unfinished.items():
        info = journal.infos[task_id]
        counts[_resume(worker, info, queued)] += 1
    logger.info(
        "Replay finished",
        extra={
            "action": "replay_finished",
            "node_id": worker.node_id,
            "duration_s": round(time.monotonic() - started_s, 3),
            **counts,
        },
    )
    return counts


_ENDS = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})


def _track(unfinished: dict[str, dict[str, Any]], e: dict[str, Any]) -> None:
    type_ = e["type"]
    if type_ is EventType.QUEUED:
        task_id = e["task_id"]
        previous = unfinished.get(task_id)
        # A new attempt's queued event may carry only what changed. The
        # payload is not copied: replayed events are not shown to anyone.
        unfinished[task_id] = (
            e["data"] if previous is None else {**previous, **e["data"]}
        )
    elif type_ in _ENDS:
        unfinished.pop(e["task_id"], None)


def _resume(worker: AsyncTaskWorker, info: TaskInfo, queued: dict[str, Any]) -> str:
    task_type = queued.get("task_type") or "?"
    func = find_task(task_type)
    attempt = info.attempt
    if func is None:
        _fail(
            worker,
            info,
            f"Task type {task_type!r} is not registered in this process, so the "
            "task cannot resume after the restart; register it with "
            f"@task({task_type!r}) before start().",
            "UnknownTaskTypeError",
        )
        return "failed"
    run = run_from_queued(info.id, task_type, func, queued, attempt)
    if info.status is TaskStatus.PENDING:
        worker.enqueue(run)
        return "requeued"
    if attempt >= worker.max_attempts:
        _fail(
            worker,
            info,
            f"The worker running this task stopped before it finished, and all "
            f"{worker.max_attempts} attempts are spent.",
            "WorkerLostError",
        )
        return "failed"
    run.attempt = attempt + 1
    worker._journal.record(
        info.id,
        EventType.QUEUED,
        {
            "task_type": task_type,
            "priority": run.priority,
            "attempt": run.attempt,
            "reason": "worker_lost",
        },
    )
    worker.enqueue(run)
    logger.warning(
        "Task of a lost worker queued again",
        extra={
            "action": "task_requeued",
            "task_id": info.id,
            "task_type": task_type,
            "attempt": run.attempt,
        },
    )
    return "retried"


def _fail(worker: AsyncTaskWorker, info: TaskInfo, error: str, error_type: str) -> None:
    worker._journal.record(
        info.id,
        EventType.FAILED,
        {"error": error, "error_type": error_type, "attempt": info.attempt},
    )
    logger.error(
        "Task cannot resume",
        extra={
            "action": "task_failed",
            "task_id": info.id,
            "task_type": info.task_type,
            "attempt": info.attempt,
            "error_type": error_type,
        },
    )
