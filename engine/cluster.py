"""The cluster: worker processes (nodes) sharing one PostgreSQL log.

A node claims runnable tasks through the store (one statement deletes their
``task_runnable`` rows and writes their ``started`` events), follows every
other node's events through ``store.tail`` into its own ``TaskInfo``
projection, and heartbeats through :mod:`engine.cluster_lease`, which also
re-queues the tasks of nodes whose heartbeat is older than the lease. This
module may import :mod:`engine.cluster_lease`, :mod:`engine.events`,
:mod:`engine.exceptions`, :mod:`engine.executor`,
:mod:`engine.registry` and :mod:`projections`; the worker imports it only
when its store is clustered (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from engine.cluster_lease import (
    BEAT,
    LEAVE,
    OWN_LEASES,
    LeaseKeeper,
    last_started,
    log_retry,
    merged_spec,
    still_ours,
)
from engine.events import EventType, TaskEvent
from engine.exceptions import ConcurrencyConflictError, StoreError
from engine.executor import TaskRun, run_from_queued, waiting
from engine.registry import find_task
from projections.index import Context
from projections.task_info import TaskInfo, apply

if TYPE_CHECKING:
    from engine.worker import AsyncTaskWorker

__all__ = ["DEFAULT_HEARTBEAT_S", "DEFAULT_LEASE_S", "Cluster"]

# Not an event recorded by this node (see Cluster._deliver).
_NOT_OWN = object()

logger = logging.getLogger(__name__)

#: Seconds between two heartbeats of a node (``TASKENGINE_HEARTBEAT_S``).
DEFAULT_HEARTBEAT_S = 2.0
#: Seconds without a heartbeat after which a node counts as lost and its
#: running tasks are queued again (``TASKENGINE_LEASE_S``).
DEFAULT_LEASE_S = 10.0

_TERMINAL = (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0
_CANCEL_ROUNDS = 8


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


class Cluster:
    """One node's share of the cluster, owned by an ``AsyncTaskWorker``.

    Attributes:
        heartbeat_s: seconds between heartbeats.
        lease_s: seconds of silence after which a node's tasks are recovered.
        poll_interval_s: the fallback poll of the claimer and the tail.
        claim_batch: most tasks one claim takes.
    """

    def __init__(self, worker: AsyncTaskWorker) -> None:
        self._worker = worker
        self._store: Any = worker.store
        self._journal = worker._journal
        self.node_id = worker.node_id
        self.heartbeat_s = _env_seconds("TASKENGINE_HEARTBEAT_S", DEFAULT_HEARTBEAT_S)
        self.lease_s = _env_seconds("TASKENGINE_LEASE_S", DEFAULT_LEASE_S)
        self.poll_interval_s = 1.0
        self.claim_batch = 1000
        self.counters = {"claimed": 0, "recovered": 0}
        self._held: set[str] = set()
        self._watchers: dict[str, list[asyncio.Future[Any]]] = {}
        self._wake = asyncio.Event()
        self._backlog = True
        self._claiming = False
        self._claim_idle = asyncio.Event()
        self._claim_idle.set()
        self._position = 0
        self._lease = LeaseKeeper(self)
        self._claimer: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[Any]] = set()
        self._journal.on_rejected = self._on_rejected

    # Lifecycle

    async def start(self, after: int) -> None:
        """Register the node, re-queue what an earlier run of it left, and
        start claiming, following the log from ``after`` and heartbeating."""
        await self._store.query(BEAT, self.node_id, os.getpid(), socket.gethostname())
        await self._store.start_listening()
        await self._store.on_runnable(self._on_runnable)
        rows = await self._store.query(OWN_LEASES, self.node_id)
        await self._lease.recover(rows)
        self._claimer = asyncio.create_task(self._claim_loop(), name="te-claimer")
        self._loops = [
            asyncio.create_task(self._follow(after), name="te-tail"),
            asyncio.create_task(self._lease.run(), name="te-heartbeat"),
        ]
        logger.info(
            "Node joined the cluster",
            extra={"action": "node_joined", "node_id": self.node_id},
        )

    async def stop_claiming(self) -> None:
        """Take no more tasks, neither by claiming nor at birth in
        ``add_task``; a claim in flight still hands its tasks over. A node
        that stops claiming while its worker runs only produces tasks."""
        claimer, self._claimer = self._claimer, None
        if claimer is not None:
            claimer.cancel()
            await asyncio.gather(claimer, return_exceptions=True)

    def cancel_unstarted(self) -> None:
        """Cancel claimed tasks whose body never started (the node stops)."""
        for task_id in list(self._held):
            run = self._worker._runs.get(task_id)
            if run is not None and not run.finished and run.runner is None:
                self._worker._finish_cancelled(
                    run, "The worker stopped before the task started."
                )

    async def close(self) -> None:
        """Stop following and heartbeating, and remove the node's row."""
        await self.stop_claiming()
        tasks = [*self._loops, *self._chores]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops = []
        with contextlib.suppress(StoreError):
            await self._store.query(LEAVE, self.node_id)
        logger.info(
            "Node left the cluster",
            extra={"action": "node_left", "node_id": self.node_id, **self.counters},
        )

    # Hooks called by the worker

    def on_queued(self, run: TaskRun) -> None:
        """Claim a task this node just recorded as queued, in the same append,
        when a slot is free, no older work is known to wait, and the node
        still claims (see :meth:`stop_claiming`)."""
        if self._backlog or self._claiming or self._claimer is None:
            return
        if len(self._held) >= self._worker.max_workers:
            return
        self._journal.record(
            run.task_id,
            EventType.STARTED,
            {"attempt": run.attempt, "node_id": self.node_id},
        )
        run.claimed = True
        self._held.add(run.task_id)

    def queued_here(self, run: TaskRun) -> None:
        """A task recorded here but left to whichever node claims it."""
        self._worker._runs[run.task_id] = run
        self._backlog = True
        self._wake.set()

    def _on_runnable(self) -> None:
        # An append made tasks runnable: claim now, without waiting for the
        # tail to read the queued events (a round trip saved per task).
        self._backlog = True
        self._wake.set()

    def release(self, task_id: str) -> None:
        """A claimed task ended here: its slot is free. The claimer is woken
        only when work is known to wait: a claim that finds nothing costs a
        round trip and the commit-order lock, and would hold off the claim
        at birth of the next ``add_task``."""
        self._held.discard(task_id)
        if self._backlog:
            self._wake.set()

    def watch(self, task_id: str, future: asyncio.Future[Any]) -> None:
        """Resolve ``future`` when the task ends, on whichever node."""
        self._watchers.setdefault(task_id, []).append(future)

    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a task wherever it waits or runs; see ``cancel_task``."""
        for _ in range(_CANCEL_ROUNDS):
            info = self._journal.infos.get(task_id)
            if info is None:
                info = await self._refold(task_id)
            if info is None or info.finished:
                return False
            self._record_cancel(task_id)
            await self._journal.durable()
            rejection = self._journal.take_rejection(task_id)
            if rejection is None:
                self._settle_watchers(task_id)
                return True
            if not isinstance(rejection, ConcurrencyConflictError):
                raise rejection
            await self._refold(task_id)
        return False

    def _record_cancel(self, task_id: str) -> None:
        run = self._worker._runs.get(task_id)
        if run is not None and not run.finished and (run.claimed or not run.taken):
            # The futures wait for the log's word: a cancel that loses a race
            # (the task ended on another node first) must not cancel them.
            for waiter in waiting(run):
                self.watch(task_id, waiter)
            run.waiters = None
            runner = run.runner
            self._worker._finish_cancelled(run, "cancelled")
            if runner is not None:
                self._worker._interrupt(run)
            return
        data = {"error": "cancelled", "error_type": "CancelledError"}
        self._journal.record(task_id, EventType.CANCELLED, data)

    # Claiming

    async def _claim_loop(self) -> None:
        delay_s = _RETRY_FIRST_S
        while True:
            free = self._worker.max_workers - len(self._held)
            if free <= 0:
                self._backlog = True
                await self._pause(self.poll_interval_s)
                continue
            wanted = min(free, self.claim_batch)
            self._claiming = True
            self._claim_idle.clear()
            try:
                pairs = await self._store.claim(self.node_id, wanted)
            except StoreError as exc:
                log_retry("Claiming tasks failed", "claim_failed", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)
                continue
            finally:
                self._claiming = False
                self._claim_idle.set()
            delay_s = _RETRY_FIRST_S
            self._backlog = len(pairs) == wanted
            self._take(pairs)
            # With work waiting and slots free, the next claim goes out now,
            # before the tasks just taken run: the server works on it while
            # this process runs them (see _adopt for adopters woken by the
            # end of this claim).
            if not self._backlog:
                await self._pause(self.poll_interval_s)

    async def _pause(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()
        self._wake.clear()

    def _take(self, pairs: list[tuple[TaskEvent, TaskEvent]]) -> None:
        infos = self._journal.infos
        for queued, started in pairs:
            if infos.is_finished(started.task_id):
                # Our own pending cancel holds this version: the cancel's
                # conflict is resolved by cancel_task's retry.
                continue
            infos.fold(queued)
            infos.fold(started)
            self._run_claimed(queued, started)
        self.counters["claimed"] += len(pairs)
        # Published when the tail reads them back, in position order.

    def _run_claimed(self, queued: TaskEvent, started: TaskEvent) -> None:
        task_id = started.task_id
        attempt = started.data.get("attempt", 1)
        self._held.add(task_id)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "Task claimed",
                extra={
                    "action": "task_claimed",
                    "task_id": task_id,
                    "attempt": attempt,
                },
            )
        if attempt > 1 and "args" not in queued.data:
            self._spawn(self._run_merged(task_id, attempt))
        else:
            self._hand_over(task_id, queued.data, attempt)

    async def _run_merged(self, task_id: str, attempt: int) -> None:
        events = await self._read(task_id)
        self._hand_over(task_id, merged_spec(events), attempt)

    def _hand_over(self, task_id: str, data: dict[str, Any], attempt: int) -> None:
        """Give a claimed task to the pool, reusing the run ``add_task`` made
        here (it holds the futures and the function)."""
        run = self._worker._runs.get(task_id)
        if run is None or run.finished or run.taken:
            run = self._build_run(task_id, data, attempt)
            if run is None:
                return
        run.attempt = attempt
        run.claimed = True
        self._worker.enqueue(run)

    def _build_run(
        self, task_id: str, data: dict[str, Any], attempt: int
    ) -> TaskRun | None:
        task_type = data.get("task_type") or "?"
        func = find_task(task_type)
        if func is None:
            self._held.discard(task_id)
            self._journal.record(
                task_id,
                EventType.FAILED,
                {
                    "error": f"Task type {task_type!r} is not registered on node "
                    f"{self.node_id!r}; register it with @task({task_type!r}) "
                    "on every node.",
                    "error_type": "UnknownTaskTypeError",
                    "attempt": attempt,
                },
            )
            return None
        return run_from_queued(task_id, task_type, func, data, attempt)

    # Following the other nodes

    async def _follow(self, after: int) -> None:
        self._position = after
        while True:
            try:
                await self._follow_once()
                return  # the store closed
            except Exception:  # noqa: BLE001 - the tail must outlive any error
                logger.exception(
                    "Following the log failed, resuming",
                    extra={"action": "tail_restarted", "position": self._position},
                )
                await asyncio.sleep(self.poll_interval_s)

    async def _follow_once(self) -> None:
        # Every event, this node's own included, reaches the bus through the
        # tail, so subscribers see the log in position order (and each task
        # in version order) whichever node wrote it: own events published at
        # commit would overtake other nodes' lower positions still in flight.
        # Own events are already folded; the bus drops an id seen twice.
        async for batch in self._store.tail(
            self._position,
            poll_interval_s=self.poll_interval_s,
            skip_own=False,
            reuse_own=True,
        ):
            self._position = batch[-1].position or self._position
            self._deliver(batch)

    def _deliver(self, batch: list[TaskEvent]) -> None:
        infos = self._journal.infos
        fold, context_of = infos.fold, infos.context
        own = self._journal.own_contexts
        assert own is not None
        fresh = []
        contexts: list[Context | None] = []
        for event in batch:
            if own:
                # Recorded here, folded then: published with its context of
                # that moment, even if the task was forgotten since.
                context = own.pop((event.task_id, event.version), _NOT_OWN)
                if context is not _NOT_OWN:
                    contexts.append(context)  # type: ignore[arg-type]
                    continue
            try:
                if fold(event):  # False for events folded already (claims)
                    fresh.append(event)
            except ValueError:
                # Our fold of this task was voided by a conflict: refold it.
                self._spawn(self._refold(event.task_id))
            context = context_of(event.task_id)
            if context is None and self._journal.voided:
                context = self._journal.voided.get(event.task_id)
            contexts.append(context)
        self._worker._published(batch, contexts)
        for event in fresh:
            self._react(event)
        if self._watchers:
            # A future taken while another node's task was pending here is
            # settled by the task's terminal event, whoever wrote it: this
            # node too, when it claimed and ran the task itself (its own
            # events are folded already, so they are not fresh).
            for event in batch:
                if event.type in _TERMINAL and event.task_id in self._watchers:
                    self._settle_watchers(event.task_id)

    def _react(self, event: TaskEvent) -> None:
        type_ = event.type
        if type_ is EventType.QUEUED:
            self._backlog = True
            self._wake.set()
            self._lose_claim(event.task_id)
        elif type_ is EventType.STARTED:
            mine = event.data.get("node_id") == self.node_id
            if mine and event.task_id not in self._held:
                # A claim in flight, or one whose reply was lost.
                self._spawn(self._adopt(event.task_id))
        elif type_ in _TERMINAL:
            self._lose_claim(event.task_id)  # watchers: settled by _deliver

    def _lose_claim(self, task_id: str) -> None:
        """Another node decided this task's fate: drop our copy of it."""
        run = self._worker._runs.get(task_id)
        if run is None or run.finished:
            return
        info = self._journal.infos.get(task_id)
        if not run.claimed and info is not None and not info.finished:
            return  # added here, queued or running elsewhere: keep waiting
        run.finished = True
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        if run.reporter is not None:
            run.reporter.close()
        self._worker._runs.pop(task_id, None)
        if run.claimed:
            self.release(task_id)
        if run.runner is not None:
            self._worker._interrupt(run)
        for waiter in waiting(run):
            self.watch(task_id, waiter)
        self._settle_watchers(task_id)

    async def _adopt(self, task_id: str) -> None:
        """Run a task this node's claim started but whose reply never came
        (the tail saw its ``started`` event, or a lease of ours nobody
        holds)."""
        await self._claim_idle.wait()
        if task_id in self._held:
            return  # the claim's reply handed it over
        self._held.add(task_id)
        events = await self._read(task_id)
        started = last_started(events)
        # The claim in flight when the tail saw the event may have ended,
        # and a later one begun, before this wait began: the reply handed
        # the task over, and it may have run here and left ``_held`` with
        # its end folded but not yet in the log. The projection tells: an
        # event after the start means there is nothing to adopt.
        if (
            started is None
            or events[-1] is not started
            or self._journal.infos.version_of(task_id) > started.version
        ):
            self.release(task_id)
            return
        attempt = started.data.get("attempt", 1)
        self._hand_over(task_id, merged_spec(events), attempt)

    def _settle_watchers(self, task_id: str) -> None:
        info = self._journal.infos.get(task_id)
        if info is None or not info.finished or task_id not in self._watchers:
            return
        from engine.futures import _resolve_from_info

        for future in self._watchers.pop(task_id):
            if not future.done():
                _resolve_from_info(future, info)

    # Conflicts

    def _on_rejected(self, task_id: str, exc: BaseException) -> None:
        if isinstance(exc, ConcurrencyConflictError):
            self._spawn(self._refold(task_id))

    async def _refold(self, task_id: str) -> TaskInfo | None:
        """Fold the task again from the log, and drop our run of it when the
        log says another node decided its fate."""
        events = await self._read(task_id)
        if not events:
            self._journal.voided.pop(task_id, None)
            return None
        info: TaskInfo | None = None
        for event in events:
            info = apply(info, event)
        assert info is not None
        current = self._journal.infos.get(task_id)
        voided = self._journal.voided.pop(task_id, None) is not None
        if current is None and info.finished and not voided:
            pass  # forgotten here (or never known): a refold does not revive it
        elif current is None or current.version <= info.version:
            self._journal.infos[task_id] = info
        run = self._worker._runs.get(task_id)
        if run is not None and run.claimed and not still_ours(events, self.node_id):
            self._lose_claim(task_id)
        self._settle_watchers(task_id)
        return info

    async def _read(self, task_id: str) -> list[TaskEvent]:
        delay_s = _RETRY_FIRST_S
        while True:
            try:
                return list(await self._store.read_task(task_id))
            except StoreError as exc:
                log_retry("Reading a task failed", "task_read_retried", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
