"""The waiting half of the worker's API: futures of task outcomes.

A mixin of :class:`engine.worker.AsyncTaskWorker`; it reads the worker's
runs and projection and never writes the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from engine.exceptions import TaskFailedError, TaskNotFoundError, UsageError
from projections.task_info import TaskInfo, TaskStatus

if TYPE_CHECKING:
    from engine.executor import TaskRun
    from engine.journal import Journal

__all__ = ["FuturesMixin", "task_failed"]


class FuturesMixin:
    """``get_task_future``, ``get_task_futures``, ``wait_for_tasks`` and
    ``wait_for_any_task``."""

    _runs: dict[str, TaskRun]
    _journal: Journal
    cluster: Any

    def get_task_future(self, task_id: str) -> asyncio.Future[Any]:
        """A future for the task's result.

        It raises :class:`TaskFailedError` for a failed task (its text is the
        task's error and ``task_error_type`` the exception's type name,
        whether taken before or after the failure; the task's own exception
        is its ``__cause__`` when the future was taken before the failure in
        the process that ran the task), and
        ``asyncio.CancelledError`` for a cancelled task.

        Raises:
            TaskNotFoundError: no task has this id (a ``KeyError``).
        """
        future = asyncio.get_running_loop().create_future()
        run = self._runs.get(task_id)
        if run is not None and not run.finished:
            waiters = run.waiters
            if waiters is None:
                run.waiters = future
            elif not isinstance(waiters, list):
                run.waiters = [waiters, future]
            else:
                if len(waiters) >= 16:
                    # Futures given up on (a wait_for that timed out) go
                    # here rather than through a callback on every future.
                    waiters[:] = [w for w in waiters if not w.done()]
                waiters.append(future)
            return future
        info = self._journal.infos.get(task_id)
        if info is None:
            raise TaskNotFoundError(
                f"No task with id {task_id!r} exists.", task_id=task_id
            )
        if self.cluster is not None and not info.finished:
            self.cluster.watch(task_id, future)
            return future
        _resolve_from_info(future, info)
        return future

    def get_task_futures(self, task_ids: Iterable[str]) -> list[asyncio.Future[Any]]:
        """One future per id, in order (see :meth:`get_task_future`)."""
        return [self.get_task_future(task_id) for task_id in task_ids]

    async def wait_for_tasks(
        self, task_ids: Sequence[str], timeout: float | None = None
    ) -> list[Any]:
        """Results in the order of ``task_ids``; a task's exception is raised.

        Raises:
            TimeoutError: some task did not finish within ``timeout`` seconds.
        """
        futures = self.get_task_futures(task_ids)
        if not futures:
            return []
        _, pending = await asyncio.wait(futures, timeout=timeout)
        if pending:
            for future in pending:
                future.cancel()
            raise TimeoutError(
                f"{len(pending)} of {len(futures)} tasks did not finish within "
                f"{timeout} seconds."
            )
        return [future.result() for future in futures]

    async def wait_for_any_task(
        self, task_ids: Sequence[str], timeout: float | None = None
    ) -> tuple[Any, str]:
        """``(result, task_id)`` of the first task to finish.

        Raises:
            TimeoutError: none finished within ``timeout`` seconds.
        """
        futures = self.get_task_futures(task_ids)
        if not futures:
            raise UsageError("wait_for_any_task needs at least one task id.")
        done, pending = await asyncio.wait(
            futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for future in pending:
            future.cancel()
        if not done:
            raise TimeoutError(f"No task finished within {timeout} seconds.")
        first = next(f for f in futures if f in done)
        return first.result(), task_ids[futures.index(first)]


def task_failed(
    task_id: str, message: str, error_type: str, cause: BaseException | None
) -> TaskFailedError:
    # One exception type for a failed task, whether the future was taken
    # before the failure or rebuilt from the log after it (or a restart);
    # the task's own exception, when this process saw it, is the cause.
    error = TaskFailedError(message, task_id=task_id, task_error_type=error_type)
    error.__cause__ = cause
    return error


def _resolve_from_info(future: asyncio.Future[Any], info: TaskInfo) -> None:
    if info.status is TaskStatus.COMPLETED:
        future.set_result(info.result)
    elif info.status is TaskStatus.FAILED:
        future.set_exception(
            task_failed(info.id, info.error or "", info.error_type or "", None)
        )
    elif info.status is TaskStatus.CANCELLED:
        future.cancel(info.error)
    else:
        future.set_exception(
            TaskFailedError(
                f"Task {info.id!r} is {info.status.value} but not held by this "
                "worker, so it cannot be awaited here.",
                task_id=info.id,
            )
        )
