"""Importing ``projections`` first or ``engine`` first both work in a fresh
interpreter (the two packages import each other's modules)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SNIPPETS = {
    "projections_first": (
        "import projections.task_info as p; import engine; "
        "assert engine.TaskInfo is p.TaskInfo"
    ),
    "engine_first": (
        "import engine; import projections.task_info as p; "
        "assert engine.TaskStatus is p.TaskStatus"
    ),
    "fold_alone": (
        "from projections.task_info import apply, TaskStatus; "
        "from engine.events import TaskEvent, EventType, utcnow; "
        "e = TaskEvent.build(1, 't', 1, EventType.QUEUED, utcnow(), {}); "
        "assert apply(None, e).status is TaskStatus.PENDING"
    ),
    "events_first": "import engine.events; import engine; engine.AsyncTaskWorker",
    "worker_module_first": (
        "import engine.worker; from engine import AsyncTaskWorker; "
        "assert engine.worker.AsyncTaskWorker is AsyncTaskWorker"
    ),
    "store_first": "import engine.store.sqlite; import projections.task_info",
}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_fresh_interpreter_imports_in_any_order(name):
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", SNIPPETS[name]],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert completed.returncode == 0, completed.stderr
