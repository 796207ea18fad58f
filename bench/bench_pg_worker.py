"""Cluster benchmark on this machine's PostgreSQL, beside pgqueuer and
procrastinate running the same no-op workload in the same run: enqueue rate
in lists of 1,000, processing rate of tasks already queued (from the first
start to the last completion, read from each system's own log), and the
median time from enqueueing a task to its first line. Figures and our ratios
to the peers are printed, never asserted.

    python bench/bench_pg_worker.py [--tasks N] [--samples N] [--repeat N]
        [--procrastinate-tasks N] [--no-peers]

Node processes are ``taskengine worker`` commands, as deployed (the task
types they run are in bench_tasks.py). Every measurement uses its own
database (``te_bench_...``), created and dropped here. The server is
``TASKENGINE_BENCH_POSTGRES_URL`` (default
``postgresql://root@127.0.0.1:5432/postgres``). The peers come with the
``bench`` extra; a peer that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import bench_tasks  # noqa: F401 - registers the task types
import sqlalchemy as sa

from engine import AsyncTaskWorker
from engine.store.migrate import upgrade_database

ADMIN_URL = os.environ.get(
    "TASKENGINE_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/postgres"
)
HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 1_000
#: max_workers of each node process in the processing measurement: two
#: claims of up to 1,000 tasks, one running while the next is in flight.
NODE_WORKERS = 2_000
PGQUEUER_BATCH = 100
PROCRASTINATE_CONCURRENCY = 10

#: Our figures and the peers', by measure then system, for the ratios.
FIGURES: dict[str, dict[str, float]] = {}


# Databases and timing, shared by the three systems


def _dsn(database: str) -> str:
    parsed = sa.engine.make_url(ADMIN_URL).set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def _database(name: str) -> AsyncIterator[str]:
    """A fresh empty database for one measurement; its plain DSN."""
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield _dsn(name)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _enqueue_rate(send: Callable[[int], Awaitable[Any]], count: int) -> float:
    """Tasks per second of ``count // BATCH`` calls of ``send(first_index)``."""
    started = time.perf_counter()
    for first in range(0, count // BATCH * BATCH, BATCH):
        await send(first)
    return count // BATCH * BATCH / (time.perf_counter() - started)


async def _processing_rate(dsn: str, sql: str, count: int, timeout_s: float) -> float:
    """Tasks per second from the first start to the last completion, read
    from the system's own log by ``sql`` (``done, first, last``) once
    ``count`` tasks are done."""
    connection = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            done, first, last = await connection.fetchrow(sql)
            if done >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    if not done or first is None or last is None or last <= first:
        return 0.0
    return done / (last - first).total_seconds()


async def _latency_ms(
    send: Callable[[int], Awaitable[Any]],
    first_line: Callable[[int], Awaitable[float]],
    samples: int,
) -> float:
    """Median milliseconds from before ``send(i)`` to the wall-clock time the
    task's first line reported through ``first_line(i)``."""
    delays = []
    for i in range(samples):
        sent = time.time()
        await send(i)
        delays.append(await first_line(i) - sent)
    return statistics.median(delays) * 1e3


def _record(measure: str, system: str, value: float) -> None:
    FIGURES.setdefault(measure, {})[system] = value


# taskengine


def _engine_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def _producer(url: str) -> AsyncTaskWorker:
    """A worker that only enqueues: its node claims nothing."""
    worker = AsyncTaskWorker(max_workers=1, store=url)
    await worker.start()
    await worker.cluster.stop_claiming()
    return worker


def _specs(first: int) -> list[dict[str, Any]]:
    return [
        {"task_type": "bench_noop", "args": [i]} for i in range(first, first + BATCH)
    ]


async def _nodes(url: str, count: int, max_workers: int) -> list[Any]:
    """``count`` node processes, each a ``taskengine worker`` as deployed."""
    environment = {**os.environ, "PYTHONPATH": HERE, "COLUMNS": "200"}
    processes = []
    for _ in range(count):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from engine.cli import main; main()",
            "worker", "--database", url, "--workers", str(max_workers),
            "--import", "bench_tasks",
            stdout=asyncio.subprocess.PIPE, env=environment,
        )  # fmt: skip
        processes.append(process)
    for process in processes:
        line = await process.stdout.readline()
        assert line.startswith(b"Worker running"), line
    return processes


async def _stop(processes: list[Any]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        await process.wait()


_ENGINE_DONE = """
SELECT count(*) FILTER (WHERE type = 'completed'),
    min(at) FILTER (WHERE type = 'started'),
    max(at) FILTER (WHERE type = 'completed')
FROM task_events
"""


async def engine_enqueue(dsn: str, count: int) -> tuple[float, float]:
    """``(add_tasks in lists of 1,000, 200 concurrent add_task)`` tasks/s."""
    url = _engine_url(dsn)
    await upgrade_database(url)
    worker = await _producer(url)
    rate = await _enqueue_rate(lambda first: worker.add_tasks(_specs(first)), count)

    async def adder(n: int) -> None:
        for _ in range(n):
            await worker.add_task("bench_noop", 1)

    started = time.perf_counter()
    await asyncio.gather(*(adder(count // 400) for _ in range(200)))
    single = count // 400 * 200 / (time.perf_counter() - started)
    await worker.stop()
    return rate, single


async def engine_latency(dsn: str, samples: int) -> None:
    url = _engine_url(dsn)
    await upgrade_database(url)
    worker = AsyncTaskWorker(max_workers=10, store=url)
    await worker.start()
    ids: dict[int, str] = {}

    async def send(i: int, on: AsyncTaskWorker = worker) -> None:
        ids[i] = await on.add_task("bench_clock", i)

    async def first_line(i: int, on: AsyncTaskWorker = worker) -> float:
        return float(await on.get_task_future(ids[i]))

    local = await _latency_ms(send, first_line, samples)
    await worker.stop()

    producer = await _producer(url)
    processes = await _nodes(url, 1, 10)
    remote = await _latency_ms(
        lambda i: send(i, producer), lambda i: first_line(i, producer), samples
    )
    await _stop(processes)
    await producer.stop()
    _record("latency", "taskengine", local)
    print(f"  add_task -> first line, same node:  median {local:.2f} ms (target 1 ms)")
    print(f"  add_task -> first line, other node: median {remote:.2f} ms (target 2 ms)")


async def engine_processing(dsn: str, count: int, node_count: int) -> float:
    url = _engine_url(dsn)
    await upgrade_database(url)
    worker = await _producer(url)
    for first in range(0, count, BATCH):
        await worker.add_tasks(_specs(first))
    await worker.stop()
    processes = await _nodes(url, node_count, NODE_WORKERS)
    try:
        return await _processing_rate(dsn, _ENGINE_DONE, count, 120)
    finally:
        await _stop(processes)


# pgqueuer: jobs in its queue table, picks and completions in its log table


_PGQUEUER_DONE = """
SELECT count(*) FILTER (WHERE status = 'successful'),
    min(created) FILTER (WHERE status = 'picked'),
    max(created) FILTER (WHERE status = 'successful')
FROM pgqueuer_log
"""


async def _pgqueuer_queries(dsn: str) -> tuple[Any, Any]:
    from pgqueuer import AsyncpgDriver, Queries

    connection = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(connection))
    return connection, queries


async def _pgqueuer_manager(dsn: str, handler: Callable[[Any], Awaitable[None]]) -> Any:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager

    driver = AsyncpgDriver(await asyncpg.connect(dsn))
    manager = QueueManager(Queries(driver))
    manager.entrypoint("bench_noop")(handler)
    return manager


def _pgqueuer_run(manager: Any, *, drain: bool) -> Awaitable[None]:
    from pgqueuer.types import QueueExecutionMode

    mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
    return manager.run(
        dequeue_timeout=dt.timedelta(seconds=1),
        batch_size=PGQUEUER_BATCH,
        mode=mode,
        log_aggregation_interval=dt.timedelta(0),
    )


def _pgqueuer_send(queries: Any, first: int) -> Awaitable[Any]:
    payloads = [str(i).encode() for i in range(first, first + BATCH)]
    return queries.enqueue(["bench_noop"] * BATCH, payloads, [0] * BATCH)


async def pgqueuer_rates(dsn: str, count: int) -> tuple[float, float]:
    """``(enqueue, processing)`` tasks/s of pgqueuer on a fresh database."""
    connection, queries = await _pgqueuer_queries(dsn)
    await queries.install()
    enqueue = await _enqueue_rate(lambda first: _pgqueuer_send(queries, first), count)

    async def noop_job(job: Any) -> None:
        return None

    manager = await _pgqueuer_manager(dsn, noop_job)
    await _pgqueuer_run(manager, drain=True)
    processing = await _processing_rate(
        dsn, _PGQUEUER_DONE, count // BATCH * BATCH, 120
    )
    await connection.close()
    return enqueue, processing


async def pgqueuer_latency(dsn: str, samples: int) -> None:
    connection, queries = await _pgqueuer_queries(dsn)
    await queries.install()
    await _pgqueuer_latency(dsn, queries, samples)
    await connection.close()


async def _pgqueuer_latency(dsn: str, queries: Any, samples: int) -> None:
    seen: dict[int, asyncio.Future[float]] = {}
    loop = asyncio.get_running_loop()

    async def clock_job(job: Any) -> None:
        now = time.time()
        seen.setdefault(int(job.payload), loop.create_future()).set_result(now)

    async def send(i: int) -> None:
        seen.setdefault(i, loop.create_future())
        await queries.enqueue("bench_noop", str(i).encode())

    async def first_line(i: int) -> float:
        return await seen[i]

    manager = await _pgqueuer_manager(dsn, clock_job)
    runner = asyncio.create_task(_pgqueuer_run(manager, drain=False))
    await asyncio.sleep(0.5)
    median = await _latency_ms(send, first_line, samples)
    manager.shutdown.set()
    await runner
    _record("latency", "pgqueuer", median)
    print(f"  enqueue -> first line:              median {median:.2f} ms")


# procrastinate: jobs and their events (deferred, started, succeeded)


_PROCRASTINATE_DONE = """
SELECT count(*) FILTER (WHERE type = 'succeeded'),
    min(at) FILTER (WHERE type = 'started'),
    max(at) FILTER (WHERE type = 'succeeded')
FROM procrastinate_events
"""


def _procrastinate_app(dsn: str, handler: Callable[..., Awaitable[None]]) -> Any:
    from procrastinate import App, PsycopgConnector

    # It warns that its app is made in __main__, which only matters to its
    # CLI; this script is its own entry point.
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    app = App(connector=PsycopgConnector(conninfo=dsn))
    app.task(name="bench_noop")(handler)
    return app


def _procrastinate_worker(app: Any, *, wait: bool) -> Awaitable[None]:
    return app.run_worker_async(
        concurrency=PROCRASTINATE_CONCURRENCY,
        wait=wait,
        install_signal_handlers=False,
        listen_notify=True,
        fetch_job_polling_interval=0.1,
    )


async def procrastinate_bench(
    dsn: str, count: int, processed: int, samples: int
) -> None:
    async def noop_job(i: int) -> None:
        return None

    app = _procrastinate_app(dsn, noop_job)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        job = app.tasks["bench_noop"]
        rate = await _enqueue_rate(
            lambda first: job.batch_defer_async(
                *({"i": i} for i in range(first, first + BATCH))
            ),
            count,
        )
    _record("enqueue", "procrastinate", rate)
    print(f"  enqueue, lists of 1,000 (batch_defer): {rate:>7,.0f} tasks/s")
    await _admin_in(dsn, "TRUNCATE procrastinate_jobs CASCADE")

    app = _procrastinate_app(dsn, noop_job)
    async with app.open_async():
        await app.tasks["bench_noop"].batch_defer_async(
            *({"i": i} for i in range(processed))
        )
        await _procrastinate_worker(app, wait=False)
    rate = await _processing_rate(dsn, _PROCRASTINATE_DONE, processed, 120)
    _record("processing", "procrastinate", rate)
    print(
        f"  processing, one process ({processed:,} tasks, concurrency "
        f"{PROCRASTINATE_CONCURRENCY}): {rate:>7,.0f} tasks/s"
    )
    # A few of its wake-ups are missed and wait for the 0.1 s poll: fewer
    # samples keep the run short; the median is unaffected.
    await _procrastinate_latency(dsn, min(samples, 100))


async def _admin_in(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _procrastinate_latency(dsn: str, samples: int) -> None:
    seen: dict[int, asyncio.Future[float]] = {}
    loop = asyncio.get_running_loop()

    async def clock_job(i: int) -> None:
        now = time.time()
        seen.setdefault(i, loop.create_future()).set_result(now)

    app = _procrastinate_app(dsn, clock_job)
    job = app.tasks["bench_noop"]

    async def send(i: int) -> None:
        seen.setdefault(i, loop.create_future())
        await job.defer_async(i=i)

    async def first_line(i: int) -> float:
        return await seen[i]

    async with app.open_async():
        runner = asyncio.create_task(_procrastinate_worker(app, wait=True))
        await asyncio.sleep(0.5)
        median = await _latency_ms(send, first_line, samples)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    _record("latency", "procrastinate", median)
    print(f"  defer -> first line:                median {median:.2f} ms")


# The run


def _print_ratios() -> None:
    print("taskengine / peer (above 1 is better for rates, below 1 for latency)")
    for measure, by_system in FIGURES.items():
        ours = by_system.get("taskengine")
        for system, theirs in by_system.items():
            if system != "taskengine" and ours and theirs:
                print(f"  {measure:<11} vs {system:<14} {ours / theirs:>6.2f}x")


def _median(values: list[float]) -> str:
    """The median, then every run's figure."""
    runs = " ".join(f"{v:,.0f}" for v in values)
    return f"{statistics.median(values):>9,.0f} tasks/s (runs: {runs})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--procrastinate-tasks", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true")
    options = parser.parse_args()
    prefix = f"te_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    count, samples, repeat = options.tasks, options.samples, options.repeat
    started = time.perf_counter()

    # Rates are the median of ``repeat`` runs, each on a fresh database, ours
    # and pgqueuer's taking turns, so a noisy neighbour hits both alike.
    rates: dict[str, list[float]] = {}
    for run in range(repeat):
        async with _database(f"{prefix}_enqueue{run}") as dsn:
            bulk, single = await engine_enqueue(dsn, count)
        rates.setdefault("enqueue", []).append(bulk)
        rates.setdefault("single", []).append(single)
        for nodes in (1, 2):
            async with _database(f"{prefix}_p{nodes}_{run}") as dsn:
                rate = await engine_processing(dsn, count // BATCH * BATCH, nodes)
            rates.setdefault(f"processing{nodes}", []).append(rate)
        if not options.no_peers:
            async with _database(f"{prefix}_pgqueuer{run}") as dsn:
                enqueue, processing = await pgqueuer_rates(dsn, count)
            rates.setdefault("pgqueuer enqueue", []).append(enqueue)
            rates.setdefault("pgqueuer processing", []).append(processing)

    print(f"taskengine on PostgreSQL (rates: median of {repeat} runs)")
    print(f"  enqueue add_tasks (lists of 1,000):  {_median(rates['enqueue'])} "
          "(target 30,000)")  # fmt: skip
    print(f"  enqueue add_task x200 concurrent:    {_median(rates['single'])}")
    async with _database(f"{prefix}_latency") as dsn:
        await engine_latency(dsn, samples)
    for nodes, target in ((1, "20,000"), (2, "25,000")):
        print(f"  processing, {nodes} node process(es):  "
              f"{_median(rates[f'processing{nodes}'])} (target {target})")  # fmt: skip
    _record("enqueue", "taskengine", statistics.median(rates["enqueue"]))
    _record("processing", "taskengine", statistics.median(rates["processing1"]))

    if not options.no_peers:
        print(f"pgqueuer (batch {PGQUEUER_BATCH})")
        enqueue, processing = rates["pgqueuer enqueue"], rates["pgqueuer processing"]
        print(f"  enqueue, lists of 1,000:             {_median(enqueue)}")
        print(f"  processing, one process:             {_median(processing)}")
        _record("enqueue", "pgqueuer", statistics.median(enqueue))
        _record("processing", "pgqueuer", statistics.median(processing))
        async with _database(f"{prefix}_pgqueuer_latency") as dsn:
            await pgqueuer_latency(dsn, samples)
        print("procrastinate")
        async with _database(f"{prefix}_procrastinate") as dsn:
            await procrastinate_bench(dsn, count, options.procrastinate_tasks, samples)
        _print_ratios()
    print(f"(whole run {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
