"""The journal: records each task transition as an event, folds it into the
``TaskInfo`` projection at once, and appends it to the store in batches.

Group commit: events recorded while a batch is being written wait and go
together in the next one. Stores that can append in place (memory, SQLite)
are flushed at the end of the current loop iteration; others (PostgreSQL) by
a flush task with one batch in flight at a time. Committed events, now with
their positions, go to ``on_committed`` (the worker publishes them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any

from engine.events import EventType, TaskEvent
from engine.exceptions import (
    ConcurrencyConflictError,
    StoreError,
    StoreUnavailableError,
)
from engine.store.base import EventStore
from projections.index import Context, TaskInfoIndex

__all__ = ["Journal"]

# Bound once: record() runs for every event of every task.
_build_event = TaskEvent.build
_now = dt.datetime.now
_UTC = dt.UTC

logger = logging.getLogger(__name__)

CommitHandler = Callable[[list[TaskEvent]], None]
# An event appended alone in place: its position and task id, and the task's
# field values it was folded into (TaskInfoIndex.fold_next).
AppendedHandler = Callable[[int, str, dict[str, Any]], None]


class Journal:
    """The write side: one per worker, the only writer of its projection."""

    def __init__(
        self,
        store: EventStore,
        on_committed: CommitHandler,
        *,
        on_appended: AppendedHandler | None = None,
        max_batch: int = 1000,
        retry_delay_s: float = 0.05,
        max_retry_delay_s: float = 2.0,
    ) -> None:
        self.store = store
        self.infos = TaskInfoIndex()
        self._on_committed = on_committed
        self._on_appended: AppendedHandler = on_appended or (
            lambda position, _task_id, _values: on_committed(
                [store.event_at(position)]  # type: ignore[attr-defined]
            )
        )
        self._max_batch = max_batch
        self._retry_delay_s = retry_delay_s
        self._max_retry_delay_s = max_retry_delay_s
        self._append_now: Callable[[Sequence[TaskEvent]], list[int]] | None = getattr(
            store, "append_now", None
        )
        # The memory store appends in place, from an event's fields: nothing
        # to batch or wait for, and no TaskEvent to build.
        self._append_fields: Callable[..., int] | None = getattr(
            store, "append_fields", None
        )
        self._pending: list[TaskEvent] = []
        # The batch an awaited append is writing (taken out of _pending).
        self._writing: list[TaskEvent] = []
        #: In a cluster (set by it): the context of each event recorded
        #: here, by (task id, version), from its recording until the log's
        #: tail publishes it. A message says what was true when the event
        #: happened, and unsettled() knows the task is still in flight.
        self.own_contexts: dict[tuple[str, int], Context | None] | None = None
        #: In a cluster: task id -> its context when a conflict voided our
        #: fold of it, until the task is folded again from the log: messages
        #: of other writers' events meanwhile still name its group and type.
        self.voided: dict[str, Context] = {}
        self._commit: asyncio.Future[None] | None = None
        self._scheduled = False
        self._flusher: asyncio.Task[None] | None = None
        #: Task id -> the error that kept its events out of the log, until
        #: taken by take_rejection().
        self.rejected: dict[str, BaseException] = {}
        #: Called with the task id and the error when a task's events are
        #: rejected (the cluster refolds the task from the log).
        self.on_rejected: Callable[[str, BaseException], None] | None = None
        self.appended_events = 0
        self.batches = 0

    # Recording

    def record(self, task_id: str, type_: EventType, data: dict[str, Any]) -> None:
        """Make the task's next event, fold it in, and queue its append."""
        infos = self.infos
        at = _now(_UTC)
        values = infos.fold_next(task_id, type_, at, data)
        version = values["version"]
        append_fields = self._append_fields
        if append_fields is not None and not self._pending:
            # The memory store: appended in place, committed at once.
            try:
                position = append_fields(task_id, version, type_, at, data)
            except StoreError as exc:
                self._reject(
                    [_build_event(None, task_id, version, type_, at, data)], exc
                )
                return
            self.appended_events += 1
            self._on_appended(position, task_id, values)
            return
        self._pending.append(_build_event(None, task_id, version, type_, at, data))
        own = self.own_contexts
        if own is not None:
            own[(task_id, version)] = (
                values["metadata"],
                values["task_type"],
                values["progress"],
            )
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._kick)

    @property
    def has_pending(self) -> bool:
        """True while some recorded event is not yet in the store."""
        return bool(self._pending)

    def commit_now(self) -> bool:
        """Write what is pending right here when the store appends in place
        (SQLite), instead of at the end of the loop iteration; True when
        everything recorded so far is now committed."""
        if self._append_now is None or self._flusher is not None:
            return False
        if self._pending:
            self._write_in_place()
        # An unavailable store hands the batch to the retrying flush task.
        return not self._pending and self._flusher is None

    def durable(self) -> asyncio.Future[None]:
        """A future done once every event recorded so far is committed."""
        if not self._pending:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        if self._commit is None:
            self._commit = asyncio.get_running_loop().create_future()
        return self._commit

    def unsettled(self) -> set[str]:
        """Ids of the tasks with an event recorded here that is not yet in
        the log or, in a cluster, not yet published by the tail: a task
        the projection must not forget yet."""
        tasks = {event.task_id for event in self._pending}
        tasks.update(event.task_id for event in self._writing)
        if self.own_contexts:
            tasks.update(task_id for task_id, _version in self.own_contexts)
        return tasks

    def take_rejection(self, task_id: str) -> BaseException | None:
        """The error that kept ``task_id``'s events out of the log, if any."""
        return self.rejected.pop(task_id, None)

    async def flush(self) -> None:
        """Wait until everything recorded so far is in the store."""
        while self._pending or (self._flusher and not self._flusher.done()):
            if self._pending:
                await asyncio.shield(self.durable())
            elif self._flusher is not None:
                await asyncio.shield(self._flusher)

    # Writing

    def _kick(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        if self._flusher is not None and self._flusher.done():
            self._flusher = None
        if self._append_now is not None and self._flusher is None:
            self._write_in_place()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._drain())

    def _take(self) -> tuple[list[TaskEvent], asyncio.Future[None] | None]:
        batch, self._pending = self._pending, []
        commit, self._commit = self._commit, None
        return batch, commit

    def _write_in_place(self) -> None:
        assert self._append_now is not None
        batch, commit = self._take()
        try:
            for start in range(0, len(batch), self._max_batch):
                chunk = batch[start : start + self._max_batch]
                self._committed(chunk, self._append_now(chunk))
        except StoreUnavailableError as exc:
            # Hand the rest to the retrying flush task; nothing is dropped.
            self._requeue(batch[start:], commit)
            self._log_unavailable(exc)
            self._flusher = asyncio.get_running_loop().create_task(self._drain())
            return
        except Exception:  # noqa: BLE001 - a refusal, or a payload it cannot write
            rest = batch[start:]
            self._isolate_in_place(rest)
        if commit is not None and not commit.done():
            commit.set_result(None)

    def _requeue(
        self, batch: list[TaskEvent], commit: asyncio.Future[None] | None
    ) -> None:
        self._pending[:0] = batch
        if commit is not None:
            if self._commit is None:
                self._commit = commit
            else:
                self._commit.add_done_callback(lambda _: _resolve(commit))

    def _isolate_in_place(self, batch: list[TaskEvent]) -> None:
        assert self._append_now is not None
        for group in _by_task(batch):
            try:
                self._committed(group, self._append_now(group))
            except Exception as exc:  # noqa: BLE001 - one task's events only
                self._reject(group, exc)

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            self._writing = []

    async def _drain_pending(self) -> None:
        delay_s = self._retry_delay_s
        after_outage = False
        while self._pending:
            batch, commit = self._take()
            batch, rest = batch[: self._max_batch], batch[self._max_batch :]
            self._writing = batch
            if rest:
                self._pending[:0] = rest
                if commit is not None:
                    self._requeue([], commit)
                    commit = None
            try:
                positions = await self.store.append(batch)
            except StoreUnavailableError as exc:
                self._requeue(batch, commit)
                self._log_unavailable(exc)
                after_outage = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._max_retry_delay_s)
                continue
            except Exception:  # noqa: BLE001 - a refusal, or a payload it cannot write
                if not await self._isolate(batch, after_outage):
                    self._requeue([], commit)  # a group waits for the store
                    continue
            else:
                self._committed(batch, positions)
            after_outage = False
            delay_s = self._retry_delay_s
            if commit is not None and not commit.done():
                commit.set_result(None)

    async def _isolate(self, batch: list[TaskEvent], after_outage: bool) -> bool:
        """Append each task's events alone, so one bad task cannot keep the
        others out; False when a group went back to wait for the store."""
        settled = True
        for group in _by_task(batch):
            try:
                self._committed(group, await self.store.append(group))
            except StoreUnavailableError:
                self._pending[:0] = group
                settled = False
            except ConcurrencyConflictError as exc:
                positions = await self._written_before(group) if after_outage else None
                if positions is None:
                    self._reject(group, exc)
                else:
                    self._committed(group, positions)
            except Exception as exc:  # noqa: BLE001 - one task's events only
                self._reject(group, exc)
        return settled

    async def _written_before(self, group: list[TaskEvent]) -> list[int] | None:
        # An append whose commit succeeded but whose reply was lost (the
        # server restarted) conflicts with itself when retried: if the log
        # holds exactly these events (same versions, types and times), they
        # are ours and already written.
        try:
            stored = {
                e.version: e for e in await self.store.read_task(group[0].task_id)
            }
        except StoreError:
            return None
        positions = []
        for event in group:
            twin = stored.get(event.version)
            if twin is None or twin.type is not event.type or twin.at != event.at:
                return None
            assert twin.position is not None
            positions.append(twin.position)
        return positions

    def _reject(self, group: list[TaskEvent], exc: Exception) -> None:
        task_id = group[0].task_id
        self.rejected[task_id] = exc
        self._disown(group)
        if isinstance(exc, ConcurrencyConflictError):
            # Another writer owns these versions: our fold of them is void,
            # and so is every later event of the task still waiting here (it
            # was numbered after the void ones). The worker refolds the task
            # from the log.
            if self.own_contexts is not None:  # a cluster refolds the task
                context = self.infos.context(task_id)
                if context is not None:
                    self.voided[task_id] = context
            self.infos.pop(task_id, None)
            if self._pending:
                self._disown([e for e in self._pending if e.task_id == task_id])
                self._pending = [e for e in self._pending if e.task_id != task_id]
        conflict = isinstance(exc, ConcurrencyConflictError)
        # A conflict is a race its caller resolves (a cancel meeting another
        # node's event, a reused task id): a warning without a traceback.
        logger.log(
            logging.WARNING if conflict else logging.ERROR,
            "Events of a task were rejected by the store",
            extra={
                "action": "append_rejected",
                "task_id": task_id,
                "version": group[0].version,
                "error_type": type(exc).__name__,
            },
            exc_info=None if conflict else exc,
        )
        if self.on_rejected is not None:
            self.on_rejected(task_id, exc)

    def _disown(self, events: list[TaskEvent]) -> None:
        # Events that will never reach the log: no tail will publish them.
        own = self.own_contexts
        if own:
            for event in events:
                own.pop((event.task_id, event.version), None)

    def _committed(self, batch: Sequence[TaskEvent], positions: list[int]) -> None:
        self.appended_events += len(batch)
        self.batches += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "Append batch flushed",
                extra={
                    "action": "append_batch_flushed",
                    "batch_size": len(batch),
                    "position": positions[-1] if positions else None,
                },
            )
        for event, position in zip(batch, positions, strict=True):
            _seal(event, position)
        self._on_committed(batch if isinstance(batch, list) else list(batch))

    def _log_unavailable(self, exc: StoreError) -> None:
        logger.warning(
            "Event store unavailable, retrying the append",
            extra={"action": "append_retry_scheduled", "error": str(exc)},
        )


def _seal(event: TaskEvent, position: int) -> None:
    # The event was built by record() and has not been shown to anyone yet:
    # giving it its position in place saves a copy per event.
    event.__dict__["position"] = position


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _by_task(batch: list[TaskEvent]) -> list[list[TaskEvent]]:
    groups: dict[str, list[TaskEvent]] = {}
    for event in batch:
        groups.setdefault(event.task_id, []).append(event)
    return list(groups.values())
