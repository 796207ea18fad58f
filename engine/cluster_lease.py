"""Heartbeats and leases of a cluster node.

A node upserts its ``task_nodes`` row every ``heartbeat_s``; once it has
been healthy for a lease, it re-queues (or fails, with its attempts spent)
the running tasks of nodes silent for longer than ``lease_s``, and adopts
claims of its own whose reply was lost. The unique ``(task_id, version)``
makes a recovery safe when several nodes try it at once. This module may
import :mod:`engine.events`, :mod:`engine.exceptions` and
:mod:`engine.constants`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from engine.constants import LEASES_TABLE, NODES_TABLE
from engine.events import EventType, TaskEvent, utcnow
from engine.exceptions import ConcurrencyConflictError, StoreError

if TYPE_CHECKING:
    from engine.cluster import Cluster

__all__ = [
    "BEAT",
    "LEAVE",
    "OWN_LEASES",
    "RUNNING",
    "LeaseKeeper",
    "last_started",
    "log_retry",
    "merged_spec",
    "still_ours",
]

logger = logging.getLogger(__name__)

#: The event types of a task that runs somewhere.
RUNNING = (EventType.STARTED, EventType.PROGRESS)

BEAT = f"""
INSERT INTO {NODES_TABLE} (node_id, heartbeat_at, pid, hostname, started_at)
VALUES ($1, now(), $2, $3, now())
ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()
"""
LEAVE = f"DELETE FROM {NODES_TABLE} WHERE node_id = $1"
OWN_LEASES = f"SELECT task_id, node_id FROM {LEASES_TABLE} WHERE node_id = $1"
# Leases whose node is gone (no row) or silent for longer than the lease.
_LOST_LEASES = f"""
SELECT l.task_id, l.node_id FROM {LEASES_TABLE} l
LEFT JOIN {NODES_TABLE} n ON n.node_id = l.node_id
WHERE l.node_id IS DISTINCT FROM $1
    AND (n.node_id IS NULL
        OR n.heartbeat_at < now() - make_interval(secs => $2))
LIMIT 500
"""
_FORGET_NODES = f"""
DELETE FROM {NODES_TABLE}
WHERE node_id <> $1 AND heartbeat_at < now() - make_interval(secs => $2)
"""


class LeaseKeeper:
    """One node's heartbeat and its recovery of other nodes' leases."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._healthy_since = float("-inf")
        self._strays: set[str] = set()

    async def run(self) -> None:
        """Heartbeat every ``heartbeat_s`` until cancelled."""
        while True:
            await asyncio.sleep(self._cluster.heartbeat_s)
            try:
                await self.beat()
            except StoreError as exc:
                self._healthy_since = float("inf")
                log_retry("Heartbeat failed", "node_heartbeat_failed", exc)

    async def beat(self) -> None:
        """One heartbeat, then the recoveries it allows."""
        host = socket.gethostname()
        await self._cluster._store.query(BEAT, self._cluster.node_id, os.getpid(), host)
        now_s = time.monotonic()
        if self._healthy_since == float("inf"):
            # Back from an outage: the other nodes may be too, so give them
            # one lease to heartbeat before judging them.
            self._healthy_since = now_s
        logger.debug(
            "Node heartbeat",
            extra={"action": "node_heartbeat", "node_id": self._cluster.node_id},
        )
        if now_s - self._healthy_since >= self._cluster.lease_s:
            rows = await self._cluster._store.query(
                _LOST_LEASES, self._cluster.node_id, self._cluster.lease_s
            )
            await self.recover(rows)
            await self._cluster._store.query(
                _FORGET_NODES, self._cluster.node_id, self._cluster.lease_s
            )
        await self._adopt_strays()

    async def _adopt_strays(self) -> None:
        # Leases of this node it does not hold, two beats in a row: claims
        # whose reply was lost while the tail was down. _adopt checks the log.
        rows = await self._cluster._store.query(OWN_LEASES, self._cluster.node_id)
        strays = {task_id for task_id, _ in rows if task_id not in self._cluster._held}
        for task_id in strays & self._strays:
            self._cluster._spawn(self._cluster._adopt(task_id))
        self._strays = strays

    async def recover(self, rows: list[Any]) -> None:
        """Re-queue (or fail) the tasks of ``(task_id, node_id)`` leases of
        lost nodes that this node does not hold."""
        lost: dict[str, int] = {}
        for task_id, node_id in rows:
            if task_id in self._cluster._held:
                continue
            if await self._requeue(task_id, node_id):
                lost[node_id] = lost.get(node_id, 0) + 1
        for node_id, count in lost.items():
            self._cluster.counters["recovered"] += count
            logger.warning(
                "Tasks of a lost node recovered",
                extra={
                    "action": "stale_node_recovered",
                    "node_id": node_id,
                    "tasks": count,
                    "lease_s": self._cluster.lease_s,
                },
            )

    async def _requeue(self, task_id: str, lost_node_id: str) -> bool:
        events = await self._cluster._read(task_id)
        started = last_started(events)
        if started is None or events[-1].type not in RUNNING:
            return False
        holder = started.data.get("node_id")
        if holder is not None and holder != lost_node_id:
            # The rows were read before: the task was recovered since and
            # runs elsewhere now (its lease names a live node).
            return False
        attempt = started.data.get("attempt", 1)
        if attempt >= self._cluster._worker.max_attempts:
            type_, data = (
                EventType.FAILED,
                {
                    "error": "The worker running this task was lost, and all "
                    f"{self._cluster._worker.max_attempts} attempts are spent.",
                    "error_type": "WorkerLostError",
                    "attempt": attempt,
                },
            )
        else:
            spec = merged_spec(events)
            type_, data = (
                EventType.QUEUED,
                {
                    **spec,
                    "attempt": attempt + 1,
                    "reason": "worker_lost",
                },
            )
        event = TaskEvent.build(
            None, task_id, events[-1].version + 1, type_, utcnow(), data
        )
        try:
            await self._cluster._store.append([event])
        except ConcurrencyConflictError:
            return False  # another node recovered it first, or it moved on
        logger.warning(
            "Task of a lost node queued again",
            extra={
                "action": "task_requeued"
                if type_ is EventType.QUEUED
                else "task_failed",
                "task_id": task_id,
                "attempt": data["attempt"],
                "node_id": started.data.get("node_id"),
            },
        )
        # The tail folds and publishes it in log order, like every event.
        return True


def merged_spec(events: list[TaskEvent]) -> dict[str, Any]:
    """The task's spec: its ``queued`` payloads merged, without a reason."""
    spec: dict[str, Any] = {}
    for event in events:
        if event.type is EventType.QUEUED:
            spec.update(event.data)
    spec.pop("reason", None)
    return spec


def last_started(events: list[TaskEvent]) -> TaskEvent | None:
    """The ``started`` event of the current attempt, if it started."""
    for event in reversed(events):
        if event.type is EventType.STARTED:
            return event
        if event.type is EventType.QUEUED:
            return None
    return None


def still_ours(events: list[TaskEvent], node_id: str) -> bool:
    """Whether ``node_id`` still runs the task, by its log."""
    started = last_started(events)
    return (
        started is not None
        and started.data.get("node_id") == node_id
        and events[-1].type in RUNNING
    )


def log_retry(message: str, action: str, exc: BaseException) -> None:
    """Log a failed store call that will be retried."""
    logger.warning(message, extra={"action": action, "error": str(exc)[:250]})
