"""``AsyncTaskWorker``: the coordinator users hold.

It owns the journal (log writes and the ``TaskInfo`` projection), the queue,
the pool of worker coroutines and the executor, and publishes every committed
event to its ``EventManager``. Adding tasks is engine.submission's half of
the class, waiting for them engine.futures'.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any

from engine.checks import (
    check_age,
    check_timeout,
    statuses,
)
from engine.events import EventType, TaskEvent
from engine.exceptions import (
    TaskNotFoundError,
    UsageError,
)
from engine.executor import TaskExecutor, TaskRun, describe_error, waiting
from engine.futures import FuturesMixin, task_failed
from engine.journal import Journal
from engine.messages import group_at, group_in, message_at, message_in
from engine.queue import TaskQueue
from engine.recovery import replay_and_resume
from engine.registry import resolve_task
from engine.store import EventStore, make_store
from engine.submission import SubmissionMixin, TaskSpec
from projections.index import Context
from projections.task_info import TaskInfo, TaskStatus

__all__ = ["AsyncTaskWorker", "TaskSpec"]

logger = logging.getLogger(__name__)


class AsyncTaskWorker(SubmissionMixin, FuturesMixin):
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
            await asyncio.wait([self._housekeeping])  # it holds the worker
            self._housekeeping = None
        await self._journal.flush()
        if self.cluster is not None:
            await self.cluster.close()
        await self._stop_cache_cleanup()
        if self._owns_events and hasattr(self._events, "stop"):
            await self._events.stop()
        elif hasattr(self._events, "render_deferred"):
            # An event manager that outlives this worker must not keep the
            # worker's log alive through its deferred recent events.
            self._events.render_deferred()
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
            cutoff = _cutoff(older_than)
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
        cutoff = _cutoff(older_than)
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


def _cutoff(older_than: dt.timedelta) -> dt.datetime:
    # The creation or end time a task must not pass to be older than
    # ``older_than``; an age beyond the calendar's start matches nothing.
    check_age(older_than)
    try:
        return dt.datetime.now(dt.UTC) - older_than
    except OverflowError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def _publish_plainly(
    events: Any,
    route: Callable[..., str | None],
    render: Callable[..., dict[str, Any]],
    *args: Any,
) -> Any:
    # An event manager of the user's own with only publish_event.
    message = render(*args)
    return events.publish_event(message["event_id"], route(*args), message)
