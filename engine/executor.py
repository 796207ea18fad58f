"""Runs one task: a short sequence of named steps.

cache lookup -> start -> run with timeout and progress -> classify the
outcome -> record it -> store it in the cache.

The body runs inline in the worker coroutine that took the task: no extra
asyncio task per run. The outcome is decided exactly once (``run.finished``):
by the body returning or raising, by its timeout, or by ``cancel_task``. A
timeout or a cancellation records the outcome first, then interrupts the
worker coroutine at the body's current ``await`` and retires it: a fresh
worker coroutine takes its slot at once, so a body that ignores its
cancellation cannot hold a slot, and whatever it returns later changes
nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.events import EventType, encode_payload
from engine.exceptions import PayloadEncodingError
from engine.progress import ProgressReporter

if TYPE_CHECKING:
    from engine.worker import AsyncTaskWorker

__all__ = ["TaskExecutor", "TaskRun", "describe_error", "run_from_queued", "waiting"]

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
    claimed: bool = False
    taken: bool = False
    holds_room: bool = False
    finished: bool = False
    completed: bool = False
    runner: asyncio.Task[Any] | None = None
    timer: asyncio.TimerHandle | None = None
    reporter: ProgressReporter | None = None
    result: Any = None
    # The futures of get_task_future: one future alone (the common case, no
    # list per task), or a list of them.
    waiters: asyncio.Future[Any] | list[asyncio.Future[Any]] | None = None


def waiting(run: TaskRun) -> list[asyncio.Future[Any]] | tuple[Any, ...]:
    """The futures waiting for ``run``'s outcome."""
    waiters = run.waiters
    if waiters is None:
        return ()
    return waiters if type(waiters) is list else (waiters,)


def run_from_queued(
    task_id: str,
    task_type: str,
    func: Callable[..., Any],
    data: dict[str, Any],
    attempt: int,
) -> TaskRun:
    """A :class:`TaskRun` rebuilt from a ``queued`` event's payload (a task
    resumed after a restart, or claimed from another node's queue)."""
    return TaskRun(
        task_id=task_id,
        task_type=task_type,
        func=func,
        args=tuple(data.get("args", ())),
        kwargs=dict(data.get("kwargs", {})),
        priority=data.get("priority", 0),
        timeout_s=data.get("timeout"),
        metadata=data.get("metadata"),
        use_cache=data.get("use_cache", False),
        cache_ttl=data.get("cache_ttl"),
        attempt=attempt,
    )


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


# Weak keys: a closure made per task must not be kept alive by this cache.
_accepts_progress: weakref.WeakKeyDictionary[Callable[..., Any], bool] = (
    weakref.WeakKeyDictionary()
)


# The last function asked about, checked by identity before the mapping.
_last_asked: tuple[object, bool] = (None, False)


def accepts_progress(func: Callable[..., Any]) -> bool:
    """Whether ``func`` takes a ``progress_callback`` argument."""
    global _last_asked
    if _last_asked[0] is func:
        return _last_asked[1]
    try:
        known = _accepts_progress[func]
    except (KeyError, TypeError):
        known = _inspect_progress(func)
    _last_asked = (func, known)
    return known


def _inspect_progress(func: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    known = "progress_callback" in parameters
    try:
        _accepts_progress[func] = known
    except TypeError:
        pass  # not weak-referenceable: inspected again next time
    return known


class TaskExecutor:
    """Runs :class:`TaskRun` objects for one worker."""

    def __init__(self, worker: AsyncTaskWorker) -> None:
        self._worker = worker
        self._journal = worker._journal
        self._persistent = worker._journal.store.persistent

    async def execute(self, run: TaskRun, runner: asyncio.Task[Any]) -> None:
        """Run ``run`` to its outcome inside the worker coroutine ``runner``.

        Raises:
            asyncio.CancelledError: only when ``runner`` itself is cancelled
                from outside (the pool is stopping), never for a task's own
                cancellation or timeout.
        """
        self._arm(run, runner)
        try:
            if run.use_cache:
                await self._run_cached(run)
            else:
                await self._run_body(run)
        except asyncio.CancelledError:
            if run.finished:
                return  # we interrupted it: the outcome is recorded
            self._worker._finish_cancelled(
                run, "The task was cancelled from inside its own code."
            )
            if runner.cancelling():
                raise
        finally:
            run.runner = None

    def _arm(self, run: TaskRun, runner: asyncio.Task[Any]) -> None:
        # The timeout covers the whole run, a wait for an identical task's
        # result included.
        if run.timeout_s is not None:
            loop = asyncio.get_running_loop()
            run.timer = loop.call_later(run.timeout_s, self._timed_out, run)
        run.runner = runner

    async def _run_body(self, run: TaskRun) -> None:
        if run.finished:
            return
        self._start(run)
        try:
            result = await self._call(run)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the task's own failure
            if not run.finished:
                self._worker._finish_failed(run, exc)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return
        if not run.finished:
            self._classify_result(run, result)
        # Otherwise a late result after a timeout or cancel changes nothing.

    async def _run_cached(self, run: TaskRun) -> None:
        cache = self._worker.cache
        call = (run.func, run.args, run.kwargs)
        keys = {
            "cache_key_fn": run.cache_key_fn,
            "task_id": run.task_id,
            "metadata": run.metadata,
        }
        key, hit, value = await cache.lookup(*call, **keys)
        if hit:
            if not run.finished:
                self._classify_result(run, value, cache_key=key)
            return
        async with cache.single_flight(*call, **keys) as flight:
            if flight.hit:
                if not run.finished:
                    self._classify_result(run, flight.value, cache_key=flight.key)
                return
            await self._run_body(run)
            if run.completed:
                await self._publish(flight, run)

    async def _publish(self, flight: Any, run: TaskRun) -> None:
        try:
            await flight.publish(run.result, run.cache_ttl)
        except Exception:  # noqa: BLE001 - the cache never fails a task
            logger.warning(
                "Cache store failed",
                extra={"action": "cache_store_failed", "task_id": run.task_id},
                exc_info=True,
            )

    # Steps

    def _start(self, run: TaskRun) -> None:
        data: dict[str, Any] = {"attempt": run.attempt}
        node_id = self._worker.node_id
        if node_id is not None:
            data["node_id"] = node_id
        if not run.claimed:  # a cluster's claim already wrote ``started``
            self._journal.record(run.task_id, EventType.STARTED, data)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "Task started",
                extra={
                    "action": "task_started",
                    "task_id": run.task_id,
                    "task_type": run.task_type,
                    "attempt": run.attempt,
                    "node_id": node_id,
                },
            )

    def _call(self, run: TaskRun) -> Any:
        kwargs = run.kwargs
        if accepts_progress(run.func):
            run.reporter = ProgressReporter(
                run.task_id, lambda p: self._progress(run, p)
            )
            kwargs = {**kwargs, "progress_callback": run.reporter}
        return run.func(*run.args, **kwargs)

    def _progress(self, run: TaskRun, value: float) -> None:
        if not run.finished:
            self._journal.record(run.task_id, EventType.PROGRESS, {"progress": value})

    def _classify_result(
        self, run: TaskRun, result: Any, *, cache_key: str | None = None
    ) -> None:
        # A result from the cache (``cache_key`` given) may have been stored
        # by a worker on the memory store: it is checked the same way.
        if self._persistent:
            try:
                encode_payload(result, "result")
            except PayloadEncodingError as exc:
                source = "the cache holds" if cache_key else "the task returned"
                message = (
                    f"The value {source} cannot be stored in the event log: "
                    f"{exc.message}"
                )
                self._worker._finish_failed(run, PayloadEncodingError(message))
                return
        if cache_key is None:
            self._worker._finish_completed(run, result)
        else:
            self._worker._finish_completed(
                run, result, from_cache=True, cache_key=cache_key
            )

    def _timed_out(self, run: TaskRun) -> None:
        run.timer = None
        if run.finished:
            return
        self._worker._finish_failed(run, TimeoutError(TIMED_OUT), timed_out=True)
        self._worker._interrupt(run)
