"""Worker benchmark: taskengine beside the async-task-worker package, same
workload and timing code, figures and ratios printed (never asserted).

    pip install -e '.[bench]'
    python bench/bench_worker.py [--tasks N] [--samples N]

Each measurement runs in a fresh interpreter so resident memory is clean.
Speed figures are the median of ``--repeat`` runs, the two engines taking
turns, so a noisy neighbour on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


async def _noop() -> None:
    return None


def _worker(engine: str, store: str | None) -> Any:
    if engine == "package":
        from async_task_worker import AsyncTaskWorker as PackageWorker

        return PackageWorker(max_workers=10)
    from engine import AsyncTaskWorker

    return AsyncTaskWorker(max_workers=10, store=store)


async def _future(worker: Any, task_id: str) -> Any:
    future = worker.get_task_future(task_id)
    if asyncio.iscoroutine(future):  # the package's reads are coroutines
        future = await future
    return future


async def throughput(engine: str, store: str | None, tasks: int) -> dict[str, float]:
    """No-op tasks per second: add all one after another, then wait for all."""
    worker = _worker(engine, store)
    await worker.start()
    try:
        started_s = time.perf_counter()
        ids = [await worker.add_task(_noop) for _ in range(tasks)]
        futures = [await _future(worker, task_id) for task_id in ids]
        await asyncio.gather(*futures)
        elapsed_s = time.perf_counter() - started_s
    finally:
        await worker.stop()
    return {"tasks_per_s": tasks / elapsed_s}


async def latency(engine: str, store: str | None, samples: int) -> dict[str, float]:
    """add_task to the task's first line, on an idle worker, median and p99."""
    worker = _worker(engine, store)
    await worker.start()
    delays: list[float] = []

    async def first_line(mark: float) -> None:
        delays.append(time.perf_counter() - mark)

    try:
        for _ in range(samples):
            task_id = await worker.add_task(first_line, time.perf_counter())
            await (await _future(worker, task_id))
    finally:
        await worker.stop()
    delays.sort()
    return {
        "median_ms": statistics.median(delays) * 1000,
        "p99_ms": delays[int(len(delays) * 0.99)] * 1000,
    }


async def memory(engine: str, store: str | None, tasks: int) -> dict[str, float]:
    """Resident bytes per retained finished task (RSS growth over N tasks)."""
    import psutil

    process = psutil.Process()
    worker = _worker(engine, store)
    await worker.start()
    try:
        warm = [await worker.add_task(_noop) for _ in range(1000)]
        await asyncio.gather(*[await _future(worker, t) for t in warm])
        gc.collect()
        before = process.memory_info().rss
        for _ in range(0, tasks, 10_000):
            batch = [await worker.add_task(_noop) for _n in range(10_000)]
            await asyncio.gather(*[await _future(worker, t) for t in batch])
            del batch
        gc.collect()
        after = process.memory_info().rss
    finally:
        await worker.stop()
    return {"bytes_per_task": (after - before) / tasks}


def _child(kind: str, engine: str, store: str | None, count: int) -> dict[str, float]:
    code = (
        f"import asyncio, json, sys; sys.path.insert(0, {HERE!r}); "
        "import bench_worker as b; "
        f"print(json.dumps(asyncio.run(b.{kind}({engine!r}, {store!r}, {count}))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--memory-tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="taskengine-bench-")

    def sqlite(name: str) -> str:
        return f"sqlite+aiosqlite:///{tmp}/{name}.db"

    rows = [
        ("no-op tasks/s, memory", "throughput", None, args.tasks, "tasks_per_s"),
        ("no-op tasks/s, SQLite", "throughput", "sqlite", args.tasks, "tasks_per_s"),
        ("add_task->first line median ms, memory", "latency", None,
         args.samples, "median_ms"),
        ("add_task->first line median ms, SQLite", "latency", "sqlite",
         args.samples, "median_ms"),
        ("resident bytes per finished task, memory", "memory", None,
         args.memory_tasks, "bytes_per_task"),
        ("resident bytes per finished task, SQLite", "memory", "sqlite",
         args.memory_tasks, "bytes_per_task"),
    ]  # fmt: skip
    print(f"{'figure':45} {'taskengine':>12} {'package':>12} {'ratio':>8}")
    for index, (title, kind, store, count, key) in enumerate(rows):
        ours_runs: list[float] = []
        theirs_runs: list[float] = []
        for run in range(1 if kind == "memory" else max(1, args.repeat)):
            url = sqlite(f"{kind}{index}-{run}") if store else None
            ours_runs.append(_child(kind, "taskengine", url, count)[key])
            if store is None:
                theirs_runs.append(_child(kind, "package", None, count)[key])
        ours = statistics.median(ours_runs)
        theirs = statistics.median(theirs_runs) if theirs_runs else None
        ratio = f"{ours / theirs:8.2f}" if theirs else f"{'':8}"
        theirs_text = f"{theirs:12.3f}" if theirs is not None else f"{'-':>12}"
        print(f"{title:45} {ours:12.3f} {theirs_text} {ratio}")


if __name__ == "__main__":
    main()
