"""Runs one task: a short sequence of named steps.

resolve -> cache lookup -> start -> run with timeout and progress ->
classify the outcome -> record it -> store it in the cache.

The outcome is decided exactly once per run (``_settle``): by the body
finishing, by its timeout, or by ``cancel_task``. Whichever comes first
records the terminal event and frees the worker slot at once; a late result
of a body that ignored its cancellation changes nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.events import EventType, encode_payload
from engine.exceptions import PayloadEncodingError
from engine.progress import ProgressReporter

if TYPE_CHECKING:
    from engine.worker import AsyncTaskWorker

__all__ = ["TaskExecutor", "TaskRun", "describe_error"]

logger = logging.getLogger(__name__)

TIMED_OUT = "timed out"


@dataclass(slots=True, eq=False)
class TaskRun:
    """What the worker holds for a task until it ends (the log holds the rest)."""

    task_id: str
    task_type: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    priority: int = 0
    timeout_s: float | None = None
    metadata: dict[str, Any] | None = None
    use_cache: bool = False
    cache_ttl: int | None = None
    cache_key_fn: Callable[[dict[str, Any]], str] | None = None
    attempt: int = 1
    handle: asyncio.Task[Any] | None = None
    timer: asyncio.TimerHandle | None = None
    reporter: ProgressReporter | None = None
    settled: asyncio.Future[None] | None = None
    started_at_s: float = 0.0
    result: Any = None
    error: BaseException | None = None
    waiters: list[asyncio.Future[Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True once the outcome was recorded."""
        return self.settled is not None and self.settled.done()


def describe_error(exc: BaseException) -> tuple[str, str]:
    """``(message, type name)`` for a task's exception, never empty.

    The message is the exception's own text; its type name when the text is
    empty; a note when rendering the text itself fails.
    """
    error_type = type(exc).__name__
    try:
        message = str(exc)
    except Exception as render_exc:  # noqa: BLE001 - any __str__ may fail
        message = (
            f"{error_type} (its message could not be rendered: "
            f"{type(render_exc).__name__})"
        )
    return (message or error_type), error_type


_accepts_progress: dict[Callable[..., Any], bool] = {}


def accepts_progress(func: Callable[..., Any]) -> bool:
    """Whether ``func`` takes a ``progress_callback`` argument."""
    known = _accepts_progress.get(func)
    if known is None:
        try:
            parameters = inspect.signature(func).parameters
        except (TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        known = "progress_callback" in parameters
        _accepts_progress[func] = known
    return known


class TaskExecutor:
    """Runs :class:`TaskRun` objects for one worker."""

    def __init__(self, worker: AsyncTaskWorker) -> None:
        self._worker = worker
        self._journal = worker._journal
        self._node_id = worker.node_id

    async def execute(self, run: TaskRun) -> None:
        """Run ``run`` to its outcome; returns when its slot is free."""
        loop = asyncio.get_running_loop()
        run.settled = loop.create_future()
        if run.use_cache and await self._serve_from_cache(run):
            return
        if run.finished:
            return
        self._start(run)
        self._launch(run, loop)
        await run.settled
        if run.use_cache and run.error is None and run.handle is not None:
            await self._store_in_cache(run)

    # Steps

    def _start(self, run: TaskRun) -> None:
        run.started_at_s = time.monotonic()
        data: dict[str, Any] = {"attempt": run.attempt}
        if self._node_id is not None:
            data["node_id"] = self._node_id
        self._journal.record(run.task_id, EventType.STARTED, data)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "Task started",
                extra={
                    "action": "task_started",
                    "task_id": run.task_id,
                    "task_type": run.task_type,
                    "attempt": run.attempt,
                    "node_id": self._node_id,
                },
            )

    def _launch(self, run: TaskRun, loop: asyncio.AbstractEventLoop) -> None:
        kwargs = run.kwargs
        if accepts_progress(run.func):
            run.reporter = ProgressReporter(
                run.task_id, lambda p: self._progress(run, p)
            )
            kwargs = {**kwargs, "progress_callback": run.reporter}
        coro = run.func(*run.args, **kwargs)
        run.handle = loop.create_task(coro)
        run.handle.add_done_callback(lambda handle: self._body_done(run, handle))
        if run.timeout_s is not None:
            run.timer = loop.call_later(run.timeout_s, self._timed_out, run)

    def _progress(self, run: TaskRun, value: float) -> None:
        if not run.finished:
            self._journal.record(run.task_id, EventType.PROGRESS, {"progress": value})

    def _body_done(self, run: TaskRun, handle: asyncio.Task[Any]) -> None:
        if run.finished:
            if not handle.cancelled():
                handle.exception()  # consumed: the outcome was decided already
            return
        if handle.cancelled():
            self._worker._finish_cancelled(
                run, "The task was cancelled from inside its own code."
            )
            return
        exc = handle.exception()
        if exc is not None:
            self._worker._finish_failed(run, exc)
            return
        self._classify_result(run, handle.result())

    def _classify_result(self, run: TaskRun, result: Any) -> None:
        if self._journal.store.persistent:
            try:
                encode_payload(result, "result")
            except PayloadEncodingError as exc:
                message = (
                    f"The task returned a value the event log cannot store: "
                    f"{exc.message}"
                )
                self._worker._finish_failed(run, PayloadEncodingError(message))
                return
        self._worker._finish_completed(run, result)

    def _timed_out(self, run: TaskRun) -> None:
        run.timer = None
        if run.finished:
            return
        self._worker._finish_failed(run, TimeoutError(TIMED_OUT), timed_out=True)
        if run.handle is not None:
            run.handle.cancel()

    # Cache

    async def _serve_from_cache(self, run: TaskRun) -> bool:
        cache = self._worker.cache
        try:
            key = cache.key_for(
                run.task_type,
                run.args,
                run.kwargs,
                cache_key_fn=run.cache_key_fn,
                metadata=run.metadata,
                task_id=run.task_id,
            )
            hit, value = await cache.get(
                run.task_type,
                run.args,
                run.kwargs,
                cache_key_fn=run.cache_key_fn,
                task_id=run.task_id,
                metadata=run.metadata,
            )
        except Exception:  # noqa: BLE001 - the cache never fails a task
            logger.warning(
                "Cache lookup failed, running the task",
                extra={"action": "cache_lookup_failed", "task_id": run.task_id},
                exc_info=True,
            )
            return False
        if not hit or run.finished:
            return False
        self._worker._finish_completed(run, value, from_cache=True, cache_key=key)
        return True

    async def _store_in_cache(self, run: TaskRun) -> None:
        try:
            await self._worker.cache.set(
                run.task_type,
                run.args,
                run.kwargs,
                run.result,
                ttl=run.cache_ttl,
                cache_key_fn=run.cache_key_fn,
                task_id=run.task_id,
                metadata=run.metadata,
            )
        except Exception:  # noqa: BLE001 - the cache never fails a task
            logger.warning(
                "Cache store failed",
                extra={"action": "cache_store_failed", "task_id": run.task_id},
                exc_info=True,
            )
