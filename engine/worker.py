"""``AsyncTaskWorker``: the coordinator users hold.

It owns the journal (log writes and the ``TaskInfo`` projection), the queue,
the pool of worker coroutines and the executor, and publishes every committed
event to its ``EventManager``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any

from engine.checks import (
    ADD_TASK_KEYWORDS,
    check_age,
    check_arguments,
    check_group_id,
    check_task_id,
    check_timeout,
    statuses,
)
from engine.events import EventType, TaskEvent
from engine.exceptions import (
    ConcurrencyConflictError,
    DuplicateTaskIdError,
    TaskNotFoundError,
    UsageError,
    WorkerNotStartedError,
)
from engine.executor import TaskExecutor, TaskRun, describe_error, waiting
from engine.futures import FuturesMixin, task_failed
from engine.ids import new_task_id
from engine.journal import Journal
from engine.messages import group_at, group_in, message_at, message_in
from engine.queue import TaskQueue
from engine.recovery import replay_and_resume
from engine.registry import resolve_task
from engine.store import EventStore, make_store
from projections.index import Context
from projections.task_info import STATUS_AFTER, TaskInfo, TaskStatus

__all__ = ["AsyncTaskWorker", "TaskSpec"]

logger = logging.getLogger(__name__)

# Shared by every task called without keyword arguments (never mutated): a
# fresh empty dict per queued task would be one more object for the garbage
# collector to traverse while the task waits.
_NO_KWARGS: dict[str, Any] = {}

TaskSpec = dict[str, Any]

_STATUS_OF = STATUS_AFTER
_TYPE_NAME = {type_: str(type_.value) for type_ in EventType}


class AsyncTaskWorker(FuturesMixin):
    """Runs async task functions with priorities, progress, cancellation,
    timeouts and an optional result cache, recording every transition in an
    event log.

    Args:
        max_workers: tasks run at once.
        task_timeout: default timeout in seconds (None: no timeout).
        worker_poll_interval: accepted for compatibility; pick-up is driven by
            the queue, never by polling.
        cache_enabled: cache results unless a task says ``use_cache=False``.
        cache_ttl: default cache lifetime in seconds.
        cache_max_size: entries the default memory cache keeps.
        cache_adapter: an ``AsyncCacheAdapter`` to use instead of the default.
        cache_cleanup_interval: seconds between sweeps of stale cache
            mappings; 0 disables the sweep.
        cleanup_interval: alias of ``cache_cleanup_interval``.
        max_queue_size: pending tasks allowed; ``add_task`` waits for room.
        task_retention_days: finished tasks older than this leave the
            in-memory projection (never the log).
        store: an ``EventStore``, a database URL, or None for memory.
        event_manager: where events are published (default: a new one).
        node_id: this process's name in the log (default: a random id).
        max_attempts: runs a task gets when workers die under it.
    """

    def __init__(
        self,
        max_workers: int = 10,
        task_timeout: float | None = None,
        worker_poll_interval: float = 1.0,
        cache_enabled: bool = False,
        cache_ttl: int | None = 3600,
        cache_max_size: int | None = 1000,
        cache_adapter: Any = None,
        cache_cleanup_interval: float = 900,
        cleanup_interval: float | None = None,
        max_queue_size: int | None = None,
        task_retention_days: float | None = 7,
        store: EventStore | str | None = None,
        event_manager: Any = None,
        node_id: str | None = None,
        max_attempts: int = 3,
    ) -> None:
        if not isinstance(max_workers, int) or max_workers < 1:
            raise UsageError(
                f"The max_workers must be a positive int, not {max_workers!r}."
            )
        if max_queue_size is not None and (
            not isinstance(max_queue_size, int) or max_queue_size < 1
        ):
            raise UsageError(
                "The max_queue_size must be a positive int or None, "
                f"not {max_queue_size!r}."
            )
        self.max_workers = max_workers
        self.task_timeout = check_timeout(task_timeout, "task_timeout")
        self.worker_poll_interval = worker_poll_interval
        self.cache_enabled = cache_enabled
        self.cache_ttl = cache_ttl
        self.cache_max_size = cache_max_size
        self.cache_cleanup_interval = (
            cleanup_interval if cleanup_interval is not None else cache_cleanup_interval
        )
        self.max_queue_size = max_queue_size
        self.task_retention_days = task_retention_days
        self.max_attempts = max_attempts
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self._store = make_store(store)
        self._owns_store = not isinstance(store, EventStore)
        self._cache = cache_adapter
        self._owns_events = event_manager is None
        self._events = event_manager
        # A store appending single events in place (memory) is never
        # clustered: its events are published at commit.
        self._journal = Journal(
            self._store, self._committed_here, on_appended=self._publish_at
        )
        self._queue = TaskQueue()
        self._executor = TaskExecutor(self)
        self._runs: dict[str, TaskRun] = {}
        self._pool: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        self._retired: set[asyncio.Task[Any]] = set()
        self._stragglers: set[asyncio.Task[Any]] = set()
        self._room: asyncio.Semaphore | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._publish: Callable[..., Any] | None = None
        #: The node's share of a cluster (PostgreSQL stores only), else None.
        self.cluster: Any = None
        if getattr(self._store, "clustered", False):
            from engine.cluster import Cluster

            self.cluster = Cluster(self)
            # Tasks queued in the log wait for any node: many may be
            # pending here, so they are kept packed.
            self._journal.infos.pack_pending = True
            # The tail publishes this node's events too, with the context
            # each had when recorded here.
            self._journal.own_contexts = {}
        self.running = False
        self.counters = {"completed": 0, "failed": 0, "cancelled": 0}

    # Properties

    @property
    def store(self) -> EventStore:
        """The event store holding this worker's log."""
        return self._store

    @property
    def queue_size(self) -> int:
        """Tasks queued in this worker and not yet started."""
        return sum(1 for run in self._runs.values() if not run.taken)

    @property
    def events(self) -> Any:
        """The ``EventManager`` this worker publishes every task event to."""
        if self._events is None:
            from engine.bus import EventManager

            self._events = EventManager()
        return self._events

    @property
    def cache(self) -> Any:
        """The ``AsyncCacheAdapter`` in use (created on first use)."""
        if self._cache is None:
            from engine.cache import AsyncCacheAdapter, MemoryCacheAdapter

            self._cache = AsyncCacheAdapter(
                default_ttl=self.cache_ttl,
                enabled=True,
                cleanup_interval=self.cache_cleanup_interval,
                adapter=MemoryCacheAdapter(max_size=self.cache_max_size or 1000),
            )
        return self._cache

    # Lifecycle

    async def __aenter__(self) -> AsyncTaskWorker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the store, replay the log, resume unfinished tasks, and start
        the worker coroutines. Calling it again does nothing."""
        if self.running:
            return
        await self._store.open()
        events = self.events
        if self._owns_events and hasattr(events, "start"):
            await events.start()
        self._publish = getattr(events, "publish_unique", None) or partial(
            _publish_plainly, events
        )
        if self.max_queue_size is not None and self.cluster is None:
            self._room = asyncio.Semaphore(self.max_queue_size)
        self.running = True
        self._pool = []
        for _ in range(self.max_workers):
            self._spawn_pool_worker()
        counts = await replay_and_resume(self)
        if self.cluster is not None:
            await self.cluster.start(counts["position"])
        if self._cache is not None or self.cache_enabled:
            await self._start_cache_cleanup()
        self._housekeeping = asyncio.create_task(self._retention_loop())
        logger.info(
            "Worker started",
            extra={
                "action": "worker_started",
                "node_id": self.node_id,
                "max_workers": self.max_workers,
                "store": self._store.url,
            },
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking work, let running tasks finish within ``timeout``
        seconds, cancel the rest, and flush the log. Tasks still queued stay
        queued in the log and run at the next start. In a cluster, running
        tasks past the timeout are cancelled too (not handed back), tasks
        not yet claimed stay queued for the other nodes, and the node's row
        leaves ``task_nodes``. Idempotent."""
        if not self.running:
            return
        self.running = False
        if self.cluster is not None:
            await self.cluster.stop_claiming()
        for task in self._pool:
            if task not in self._busy:
                task.cancel()
        busy = list(self._busy)
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for run in list(self._runs.values()):
            if run.runner is not None and not run.finished:
                self._finish_cancelled(
                    run, "The worker stopped before the task finished."
                )
                self._interrupt(run)
        if self.cluster is not None:
            self.cluster.cancel_unstarted()
        leftovers = [*self._pool, *self._stragglers]
        for task in leftovers:
            task.cancel()
        if leftovers:
            # A body that ignores cancellation is left behind, not awaited.
            await asyncio.wait(leftovers, timeout=1.0)
        self._pool = []
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self._journal.flush()
        if self.cluster is not None:
            await self.cluster.close()
        await self._stop_cache_cleanup()
        if self._owns_events and hasattr(self._events, "stop"):
            await self._events.stop()
        if self._owns_store:
            await self._store.close()
        logger.info(
            "Worker stopped",
            extra={
                "action": "worker_stopped",
                "node_id": self.node_id,
                "tasks_completed": self.counters["completed"],
                "tasks_failed": self.counters["failed"],
                "tasks_cancelled": self.counters["cancelled"],
                "events_appended": self._journal.appended_events,
                "append_batches": self._journal.batches,
            },
        )

    def _spawn_pool_worker(self) -> None:
        index = len(self._pool)
        task = asyncio.create_task(
            self._pool_worker(), name=f"taskengine-worker-{index}"
        )
        self._pool.append(task)

    async def _pool_worker(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        queue = self._queue
        while self.running:
            task_id = queue.get_nowait()
            if task_id is None:
                task_id = await queue.get()
            run = self._runs.get(task_id)
            if run is None or run.finished or run.taken:
                continue
            run.taken = True
            if run.holds_room:
                self._give_back_room(run)
            self._busy.add(me)
            try:
                await self._executor.execute(run, me)
            except Exception as exc:  # noqa: BLE001 - keep the slot serving
                logger.exception(
                    "Worker coroutine failed while running a task",
                    extra={"action": "pool_worker_error", "task_id": task_id},
                )
                if not run.finished:
                    self._finish_failed(run, exc)
            finally:
                self._busy.discard(me)
            if me in self._retired:
                self._retired.discard(me)
                return

    def _give_back_room(self, run: TaskRun) -> None:
        if run.holds_room and self._room is not None:
            run.holds_room = False
            self._room.release()

    def _interrupt(self, run: TaskRun) -> None:
        """Interrupt a running body whose outcome was just recorded, and put a
        fresh worker coroutine in its slot."""
        runner = run.runner
        if runner is None:
            return
        run.runner = None
        self._retired.add(runner)
        if runner in self._pool:
            self._pool.remove(runner)
        self._stragglers.add(runner)
        runner.add_done_callback(self._stragglers.discard)
        runner.cancel()
        if self.running:
            self._spawn_pool_worker()

    # Adding tasks

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

    # Outcomes (called by the executor and by cancel_task)

    def _finish_completed(
        self,
        run: TaskRun,
        result: Any,
        *,
        from_cache: bool = False,
        cache_key: str | None = None,
    ) -> None:
        data: dict[str, Any] = {"result": result}
        if from_cache:
            data["from_cache"] = True
            data["cache_key"] = cache_key
        run.result = result
        run.completed = True
        self._settle(run, EventType.COMPLETED, data)
        self.counters["completed"] += 1
        waiters = run.waiters
        if waiters is not None:
            if not isinstance(waiters, list):
                if not waiters.done():
                    waiters.set_result(result)
                return
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(result)

    def _finish_failed(
        self, run: TaskRun, exc: BaseException, *, timed_out: bool = False
    ) -> None:
        message, error_type = describe_error(exc)
        data = {"error": message, "error_type": error_type, "attempt": run.attempt}
        if timed_out:
            data["timeout"] = run.timeout_s
        self._settle(run, EventType.FAILED, data)
        self.counters["failed"] += 1
        logger.error(
            "Task failed",
            extra={
                "action": "task_failed",
                "task_id": run.task_id,
                "task_type": run.task_type,
                "attempt": run.attempt,
                "error_type": error_type,
            },
            exc_info=exc if not timed_out else None,
        )
        if run.waiters is not None:
            for waiter in waiting(run):
                if not waiter.done():
                    waiter.set_exception(
                        task_failed(run.task_id, message, error_type, exc)
                    )

    def _finish_cancelled(self, run: TaskRun, reason: str) -> None:
        data = {"error": reason, "error_type": "CancelledError"}
        self._settle(run, EventType.CANCELLED, data)
        self.counters["cancelled"] += 1
        if run.waiters is not None:
            for waiter in waiting(run):
                waiter.cancel(reason)

    def _settle(self, run: TaskRun, type_: EventType, data: dict[str, Any]) -> None:
        if run.reporter is not None:
            run.reporter.flush()  # a value the throttle held back goes first
        run.finished = True
        self._journal.record(run.task_id, type_, data)
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        if run.reporter is not None:
            run.reporter.close()
        self._runs.pop(run.task_id, None)
        if run.claimed and self.cluster is not None:
            self.cluster.release(run.task_id)
        if logger.isEnabledFor(logging.INFO) and type_ is not EventType.FAILED:
            logger.info(
                "Task ended",
                extra={
                    "action": f"task_{type_.value}",
                    "task_id": run.task_id,
                    "task_type": run.task_type,
                    "attempt": run.attempt,
                },
            )

    # Cancelling

    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a pending or running task.

        Returns True when the task is now CANCELLED: a pending task never
        runs, a running one is interrupted at its next ``await``. False for an
        unknown or finished task, or one whose body already returned. In a
        cluster any node may cancel any task; the running node interrupts it.
        """
        if self.cluster is not None:
            return bool(await self.cluster.cancel_task(task_id))
        run = self._runs.get(task_id)
        if run is None or run.finished:
            return False
        self._finish_cancelled(run, "cancelled")
        if run.runner is not None:
            self._interrupt(run)
        else:
            self._give_back_room(run)
        await self._journal.durable()
        return True

    # Reading the projection

    def get_task_info(self, task_id: str) -> TaskInfo | None:
        """The task's current state, or None for an unknown id."""
        return self._journal.infos.get(task_id)

    def get_all_tasks(
        self,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        limit: int | None = None,
        older_than: dt.timedelta | None = None,
    ) -> list[TaskInfo]:
        """Tasks newest first, filtered by status and age.

        ``status`` is one status, its string or a list of them; ``limit``
        keeps the newest; ``older_than`` keeps tasks created at least that
        long ago.
        """
        infos: Iterable[TaskInfo] = self._journal.infos.values()
        if status is not None:
            wanted = statuses(status)
            infos = (info for info in infos if info.status in wanted)
        if older_than is not None:
            check_age(older_than)
            cutoff = dt.datetime.now(dt.UTC) - older_than
            infos = (info for info in infos if info.created_at <= cutoff)
        ordered = sorted(infos, key=lambda info: info.created_at, reverse=True)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise UsageError(
                    f"The limit must be a non-negative int, not {limit!r}."
                )
            ordered = ordered[:limit]
        return ordered

    # The log

    async def history(self, task_id: str) -> list[TaskEvent]:
        """The task's events from the store, in version order.

        Raises:
            TaskNotFoundError: the log has no event of this task.
        """
        await self._journal.flush()
        events = await self._store.read_task(task_id)
        if not events:
            raise TaskNotFoundError(
                f"No task with id {task_id!r} exists.", task_id=task_id
            )
        return events

    def _committed_here(self, events: list[TaskEvent]) -> None:
        # In a cluster the tail publishes every event in log order (see
        # engine/cluster.py); a single node publishes at commit.
        if self.cluster is None:
            self._published(events)

    def _published(
        self,
        events: list[TaskEvent],
        contexts: list[Context | None] | None = None,
    ) -> None:
        # ``contexts``: each event's task context (default: taken now).
        if contexts is None:
            context_of = self._journal.infos.context
            contexts = [context_of(event.task_id) for event in events]
        for event, context in zip(events, contexts, strict=True):
            self._publish_one(event, context)

    def _publish_one(self, event: TaskEvent, context: Context | None) -> None:
        publish = self._publish
        if publish is None:
            return
        try:
            publish(group_in, message_in, event, context)
        except Exception:  # noqa: BLE001 - a subscriber never breaks the log
            self._publish_failed(event.task_id)

    def _publish_at(self, position: int, task_id: str, values: dict[str, Any]) -> None:
        # An event the memory store appended in place: published by its
        # position and the task's field values (the event is read back from
        # the store only if its message is rendered). The values dict goes on
        # changing with the task, but what a message takes from it does not:
        # metadata and task type never change, and the progress is read only
        # for a failed or cancelled event, after which a task of the memory
        # store has no further event (nothing retries it in this process).
        publish = self._publish
        if publish is None:
            return
        try:
            publish(group_at, message_at, self._store, position, values)
        except Exception:  # noqa: BLE001 - a subscriber never breaks the log
            self._publish_failed(task_id)

    def _publish_failed(self, task_id: str) -> None:
        logger.exception(
            "Publishing an event failed",
            extra={"action": "publish_failed", "task_id": task_id},
        )

    # Cache

    async def invalidate_cache(
        self,
        task_func: Callable[..., Any] | str,
        *args: Any,
        cache_key_fn: Callable[[dict[str, Any]], str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Drop the cached result of ``task_func(*args, **kwargs)``."""
        _, func = resolve_task(task_func)
        return await self.cache.invalidate(
            func, args, kwargs, cache_key_fn=cache_key_fn, metadata=metadata
        )

    async def clear_cache(self) -> None:
        """Drop every cached result."""
        await self.cache.clear()

    async def _start_cache_cleanup(self) -> None:
        start = getattr(self.cache, "start_cleanup_task", None)
        if start is not None:
            await start()

    async def _stop_cache_cleanup(self) -> None:
        stop = getattr(self._cache, "stop_cleanup_task", None)
        if stop is not None:
            await stop()

    # Housekeeping

    async def _retention_loop(self) -> None:
        if not self.task_retention_days:
            return
        while True:
            await asyncio.sleep(min(3600.0, self.task_retention_days * 86400 / 24))
            self.forget_finished(dt.timedelta(days=self.task_retention_days))

    def forget_finished(self, older_than: dt.timedelta) -> int:
        """Drop finished tasks older than ``older_than`` from the projection
        (the log keeps them); returns how many were dropped."""
        check_age(older_than)
        cutoff = dt.datetime.now(dt.UTC) - older_than
        infos = self._journal.infos
        # A task whose last events are not yet in the log (or, in a cluster,
        # not yet published by the tail) stays: its messages need it, and
        # its id must not be free for reuse while they are in flight.
        unsettled = self._journal.unsettled()
        stale = [
            task_id
            for task_id, info in infos.items()
            if info.completed_at is not None
            and info.completed_at <= cutoff
            and task_id not in unsettled
        ]
        for task_id in stale:
            del infos[task_id]
        return len(stale)


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


def _publish_plainly(
    events: Any,
    route: Callable[..., str | None],
    render: Callable[..., dict[str, Any]],
    *args: Any,
) -> Any:
    # An event manager of the user's own with only publish_event.
    message = render(*args)
    return events.publish_event(message["event_id"], route(*args), message)
