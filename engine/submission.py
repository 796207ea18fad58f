"""The adding half of the worker's API: ``add_task``, ``add_tasks`` and the
checks and first event of a new task.

A mixin of :class:`engine.worker.AsyncTaskWorker`; it checks what the caller
passed, records each task's ``queued`` event and hands the task to the pool
(or, in a cluster, to the log for any node).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from engine.checks import (
    ADD_TASK_KEYWORDS,
    check_arguments,
    check_group_id,
    check_task_id,
    check_timeout,
)
from engine.events import EventType
from engine.exceptions import (
    ConcurrencyConflictError,
    DuplicateTaskIdError,
    UsageError,
    WorkerNotStartedError,
)
from engine.executor import TaskRun
from engine.ids import new_task_id
from engine.registry import resolve_task

if TYPE_CHECKING:
    from engine.journal import Journal
    from engine.queue import TaskQueue
    from engine.store import EventStore

__all__ = ["SubmissionMixin", "TaskSpec"]

#: One task of ``add_tasks``: ``task_func`` (or ``task_type``), optional
#: ``args`` and ``kwargs``, and any keyword of ``add_task``.
TaskSpec = dict[str, Any]

# Shared by every task called without keyword arguments (never mutated): a
# fresh empty dict per queued task would be one more object for the garbage
# collector to traverse while the task waits.
_NO_KWARGS: dict[str, Any] = {}


class SubmissionMixin:
    """``add_task`` and ``add_tasks``."""

    running: bool
    task_timeout: float | None
    cache_enabled: bool
    max_queue_size: int | None
    cluster: Any
    _journal: Journal
    _store: EventStore
    _runs: dict[str, TaskRun]
    _queue: TaskQueue
    _room: asyncio.Semaphore | None

    def _give_back_room(self, run: TaskRun) -> None:
        if run.holds_room and self._room is not None:
            run.holds_room = False
            self._room.release()

    async def add_task(
        self,
        task_func: Callable[..., Any] | str,
        *args: Any,
        priority: int = 0,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,
        use_cache: bool | None = None,
        cache_ttl: int | None = None,
        cache_key_fn: Callable[[dict[str, Any]], str] | None = None,
        **kwargs: Any,
    ) -> str:
        """Queue a task and return its id once its ``queued`` event is durable.

        Lower ``priority`` runs first; equal priorities run in order of
        arrival. ``task_func`` is an async function or a registered task type.

        Raises:
            WorkerNotStartedError: the worker is not running.
            UnknownTaskTypeError: ``task_func`` names no registered type.
            NotAsyncTaskError: ``task_func`` is not ``async def``.
            DuplicateTaskIdError: ``task_id`` is already in the log.
            InvalidTimeoutError: ``timeout`` is not a positive number.
            PayloadEncodingError: an argument cannot be written to the log.
        """
        run = self._prepare(
            task_func, args, kwargs, priority, task_id, metadata, timeout,
            use_cache, cache_ttl, cache_key_fn,
        )  # fmt: skip
        if self._room is not None:
            await self._room.acquire()
            run.holds_room = True
        self._record_queued(run)
        journal = self._journal
        if journal.has_pending and not journal.commit_now():
            await journal.durable()
        self._confirm_queued(run)
        return run.task_id

    async def add_tasks(self, specs: Iterable[TaskSpec]) -> list[str]:
        """Queue many tasks in one durable append; returns their ids.

        Each spec is a dict with ``task_func`` (or ``task_type``), optional
        ``args`` and ``kwargs``, and any keyword of :meth:`add_task`. Every
        spec is checked before any is written: one bad spec queues none.
        """
        runs = [self._prepare_spec(spec, i) for i, spec in enumerate(specs)]
        seen: set[str] = set()
        for run in runs:
            if run.task_id in seen:
                raise DuplicateTaskIdError(
                    f"Task id {run.task_id!r} appears twice in one add_tasks call.",
                    task_id=run.task_id,
                )
            seen.add(run.task_id)
        await self._reserve_room(runs)
        for run in runs:
            self._record_queued(run)
        await self._journal.durable()
        for run in runs:
            self._confirm_queued(run)
        return [run.task_id for run in runs]

    async def _reserve_room(self, runs: list[TaskRun]) -> None:
        # Room for every task before any is written: all are queued, or none.
        if self._room is None:
            return
        if self.max_queue_size is not None and len(runs) > self.max_queue_size:
            raise UsageError(
                f"add_tasks got {len(runs)} tasks but max_queue_size is "
                f"{self.max_queue_size}; pass at most that many at once."
            )
        try:
            for run in runs:
                await self._room.acquire()
                run.holds_room = True
        except BaseException:
            for run in runs:
                self._give_back_room(run)
            raise

    def _prepare_spec(self, spec: TaskSpec, index: int) -> TaskRun:
        if not isinstance(spec, dict):
            raise UsageError(f"Task spec {index} must be a dict, not {spec!r}.")
        spec = dict(spec)
        task_func = spec.pop("task_func", None)
        task_type = spec.pop("task_type", None)
        if task_func is not None and task_type is not None:
            raise UsageError(
                f"Task spec {index} names both task_func and task_type; give one."
            )
        func = task_func if task_func is not None else task_type
        if func is None:
            raise UsageError(f"Task spec {index} names no task_func or task_type.")
        args = tuple(spec.pop("args", ()))
        kwargs = dict(spec.pop("kwargs", {}))
        unknown = set(spec) - ADD_TASK_KEYWORDS
        if unknown:
            raise UsageError(
                f"Task spec {index} has unknown keys {sorted(unknown)!r}; put task "
                "arguments under 'args' and 'kwargs'."
            )
        return self._prepare(
            func, args, kwargs, spec.get("priority", 0), spec.get("task_id"),
            spec.get("metadata"), spec.get("timeout"), spec.get("use_cache"),
            spec.get("cache_ttl"), spec.get("cache_key_fn"),
        )  # fmt: skip

    def _prepare(
        self,
        task_func: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        task_id: str | None,
        metadata: dict[str, Any] | None,
        timeout: float | None,
        use_cache: bool | None,
        cache_ttl: int | None,
        cache_key_fn: Callable[[dict[str, Any]], str] | None,
    ) -> TaskRun:
        if not self.running:
            raise WorkerNotStartedError()
        task_type, func = resolve_task(task_func)
        if type(priority) is not int or not -(2**63) <= priority < 2**63:
            _check_priority(priority)
        task_id = self._new_task_id(task_id)
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise UsageError(
                    f"The metadata must be a dict or None, not {metadata!r}."
                )
            check_group_id(metadata)
        timeout_s = (
            self.task_timeout if timeout is None else check_timeout(timeout, "timeout")
        )
        if self._store.persistent:
            check_arguments(task_type, args, kwargs, metadata)
        if cache_ttl is not None:
            from engine.cache import validate_ttl

            validate_ttl(cache_ttl)
        return TaskRun(
            task_id=task_id,
            task_type=task_type,
            func=func,
            args=args,
            kwargs=kwargs or _NO_KWARGS,
            priority=priority,
            timeout_s=timeout_s,
            metadata=_own_copy(metadata) if metadata else None,
            use_cache=self.cache_enabled if use_cache is None else bool(use_cache),
            cache_ttl=cache_ttl,
            cache_key_fn=cache_key_fn,
        )

    def _new_task_id(self, task_id: str | None) -> str:
        if task_id is None:
            return new_task_id()
        if not isinstance(task_id, str) or not task_id:
            raise UsageError(
                f"The task_id must be a non-empty string, not {task_id!r}."
            )
        check_task_id(task_id)
        if task_id in self._journal.infos or task_id in self._runs:
            raise DuplicateTaskIdError(
                f"A task with id {task_id!r} already exists; task ids cannot be "
                "reused. Omit task_id to get a fresh one.",
                task_id=task_id,
            )
        return task_id

    def _record_queued(self, run: TaskRun) -> None:
        data: dict[str, Any] = {"task_type": run.task_type, "priority": run.priority}
        if run.args:
            data["args"] = list(run.args)
        if run.kwargs:
            data["kwargs"] = run.kwargs
        if run.metadata:
            data["metadata"] = run.metadata
        if run.timeout_s is not None:
            data["timeout"] = run.timeout_s
        if run.use_cache:
            data["use_cache"] = True
            if run.cache_ttl is not None:
                data["cache_ttl"] = run.cache_ttl
        if run.attempt > 1:
            data["attempt"] = run.attempt
        self._runs[run.task_id] = run
        self._journal.record(run.task_id, EventType.QUEUED, data)
        if self.cluster is not None:
            self.cluster.on_queued(run)

    def _confirm_queued(self, run: TaskRun) -> None:
        journal = self._journal
        rejection = journal.take_rejection(run.task_id) if journal.rejected else None
        if rejection is not None:
            self._runs.pop(run.task_id, None)
            self._give_back_room(run)
            if run.claimed and self.cluster is not None:
                # Claimed at birth: the slot it took is free again.
                run.claimed = False
                self.cluster.release(run.task_id)
            info = self._journal.infos.get(run.task_id)
            if info is not None and info.version == 1:
                # The task's only event never reached the log: forget it.
                self._journal.infos.pop(run.task_id, None)
            if isinstance(rejection, ConcurrencyConflictError):
                raise DuplicateTaskIdError(
                    f"A task with id {run.task_id!r} already exists in the log; "
                    "task ids cannot be reused.",
                    task_id=run.task_id,
                ) from rejection
            raise rejection
        self.enqueue(run)

    def enqueue(self, run: TaskRun) -> None:
        """Hand a recorded task to the pool (used by add_task and recovery).

        In a cluster only a claimed task goes to the pool; the others wait
        in the log for whichever node claims them."""
        if self.cluster is not None and not run.claimed:
            self.cluster.queued_here(run)
            return
        self._runs[run.task_id] = run
        self._queue.put(run.priority, run.task_id)


def _own_copy(metadata: dict[str, Any]) -> dict[str, Any]:
    # A deep copy, so the caller changing its dict (or a list in it) later
    # changes no task; values that cannot be copied (a lock, say, which only
    # the memory store accepts) are kept by reference.
    try:
        return copy.deepcopy(metadata)
    except Exception:  # noqa: BLE001 - any __deepcopy__ may fail
        return dict(metadata)


def _check_priority(priority: Any) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise UsageError(f"The priority must be an int, not {priority!r}.")
    if not -(2**63) <= priority < 2**63:
        raise UsageError(
            f"The priority {priority} is out of range; use a 64-bit integer "
            "(lower runs first)."
        )
