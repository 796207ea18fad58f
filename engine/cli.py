"""The ``taskengine`` command: run the demo, a worker or the HTTP service,
migrate the database, and read the log (tasks, history, replay, tail,
report, export).

The only module that configures logging: the library itself never adds
handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.constants import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from engine.exceptions import TaskEngineError
from engine.store.urls import backend_of, safe_url
from projections.task_info import TaskStatus

__all__ = ["build_parser", "main"]

# Piped output is not wrapped at 80 columns: one event, one line.
console = Console(width=None if sys.stdout.isatty() else 250, soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _database(args: argparse.Namespace) -> str:
    return args.database or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def _add_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        help=(
            f"the event log: sqlite+aiosqlite:///path.db or "
            f"postgresql+asyncpg://... (default: ${DATABASE_URL_ENV}, else "
            f"{DEFAULT_DATABASE_URL})"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="taskengine",
        description="An event-sourced asynchronous task engine.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="index files, one task per file")
    demo.add_argument("directory", nargs="?", type=Path, help="default: the stdlib")
    demo.add_argument("--workers", type=_positive_int, default=8)
    demo.add_argument("--pattern", default="*", help="glob of files to index")
    demo.add_argument(
        "--limit", type=_positive_int, help="index at most this many files"
    )
    _add_database(demo)

    worker = commands.add_parser(
        "worker",
        help="run a worker on the log",
        description=(
            "Run a worker on the log until Ctrl-C or SIGTERM. It resumes the "
            "tasks left in the log whose type it knows (--import the modules "
            "that register them; others end FAILED). On Ctrl-C or SIGTERM "
            "running tasks get 5 seconds to finish, then end CANCELLED; queued "
            "ones stay queued for the next start."
        ),
    )
    worker.add_argument("--workers", type=_positive_int, default=10)
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module registering task types (repeatable)",
    )
    _add_database(worker)

    _add_serve(commands)

    db = commands.add_parser("db", help="manage the log's schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    for name, text in (("upgrade", "migrate to the newest schema"),
                       ("current", "print the schema revision")):  # fmt: skip
        _add_database(db_commands.add_parser(name, help=text))

    tasks = commands.add_parser("tasks", help="list tasks from the log")
    tasks.add_argument(
        "--status",
        action="append",
        choices=[status.value for status in TaskStatus],
        help="filter (repeatable)",
    )
    tasks.add_argument("--type", dest="task_type", help="filter by task type")
    tasks.add_argument("--limit", type=_positive_int, default=20)
    _add_database(tasks)

    history = commands.add_parser("history", help="one task's timeline")
    history.add_argument("task_id")
    _add_database(history)

    replay = commands.add_parser("replay", help="rebuild state from the log")
    replay.add_argument("--position", type=_position, help="as of this position")
    replay.add_argument("--at", type=_aware_time, help="as of this ISO time")
    _add_database(replay)

    tail = commands.add_parser(
        "tail",
        help="print events as they are appended",
        description=(
            "Print the log's events, one per line (payloads cut at 120 "
            "characters). Without --after it starts 20 events before the end; "
            "--after 0 prints the whole log."
        ),
    )
    tail.add_argument("--after", type=_position, default=None, help="start after P")
    tail.add_argument("--follow", "-f", action="store_true")
    tail.add_argument(
        "--poll", type=_positive_float, default=0.5, help="seconds between polls"
    )
    _add_database(tail)

    report = commands.add_parser("report", help="SQL reports over the log")
    _add_database(report)

    export = commands.add_parser("export", help="write the log as JSON lines")
    export.add_argument("--output", "-o", type=Path, help="default: stdout")
    _add_database(export)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"taskengine {version('taskengine')}"
    except PackageNotFoundError:
        return "taskengine (not installed)"


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API and dashboard",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        from engine.serve import add_serve_arguments
    except ImportError:
        serve.description = "Needs the 'api' extra: pip install 'taskengine[api]'."
        _add_database(serve)
        return
    add_serve_arguments(serve)


def _number(kind: type[int] | type[float], minimum: float, what: str) -> Any:
    """An argparse type: a ``kind`` number of at least ``minimum`` (exclusive
    for floats), refused with a sentence naming ``what`` it should be."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}.") from None
        too_small = value <= minimum if kind is float else value < minimum
        if too_small or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} is not {what}.")
        return value

    return parse


_positive_int = _number(int, 1, "a positive whole number")
_positive_float = _number(float, 0.0, "a positive number of seconds")
_position = _number(int, 0, "a log position (0 or more)")


def _is_driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return module in {"sqlalchemy", "asyncpg", "sqlite3", "alembic"} or isinstance(
        exc, OverflowError
    )


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ImportError) and getattr(exc, "name", None):
        return f"Cannot import {exc.name!r}: {text}."
    return text if text.endswith(".") else f"{text}."


def _aware_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2026-01-31T12:00:00+00:00."
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskengine`` console script."""
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    if args.verbose == 0:
        # A failed task is a result in this tool, shown in its tables, not a
        # crash to print with a traceback.
        handler.addFilter(
            lambda record: getattr(record, "action", None) != "task_failed"
        )
    logging.basicConfig(level=level, handlers=[handler])
    command = _COMMANDS[args.command]
    try:
        if args.command == "serve":
            # uvicorn runs its own event loop.
            from engine.serve import serve_main

            return serve_main(args)
        return asyncio.run(command(args)) or 0
    except TaskEngineError as exc:
        errors.print(f"[red]error:[/red] {exc.message}", markup=True, highlight=False)
        return 2
    except BrokenPipeError:
        # The reader went away (`taskengine export | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, ImportError, ValueError, NotImplementedError) as exc:
        # Bad paths, modules, URLs and patterns: a sentence, not a traceback.
        errors.print(f"[red]error:[/red] {_sentence(exc)}", highlight=False)
        return 2
    except Exception as exc:
        # A driver error that reached us untranslated: still one sentence.
        if not _is_driver_error(exc):
            raise
        errors.print(f"[red]error:[/red] {_sentence(exc)}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        return 143


async def _demo(args: argparse.Namespace) -> int:
    from engine.demo import default_directory, run_demo

    _stop_on_sigterm()
    directory = args.directory or default_directory()
    if not directory.is_dir():
        raise NotADirectoryError(f"{str(directory)!r} is not a directory.")
    totals = await run_demo(
        directory,
        _database(args),
        workers=args.workers,
        pattern=args.pattern,
        limit=args.limit,
        console=console,
    )
    return 0 if totals["completed"] else 1


async def _worker(args: argparse.Namespace) -> int:
    import importlib

    import engine.demo  # noqa: F401 - the demo's leftover tasks resume here
    from engine.worker import AsyncTaskWorker

    for module in args.imports:
        importlib.import_module(module)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncTaskWorker(max_workers=args.workers, store=_database(args)):
        _freeze_startup_objects()
        console.print(f"Worker running on {safe_url(_database(args))}; Ctrl-C stops.")
        await stop.wait()
    return 0


async def _db(args: argparse.Namespace) -> int:
    from engine.store.migrate import (
        database_revision,
        head_revision,
        upgrade_database,
    )

    url = _database(args)
    head = head_revision()
    if args.db_command == "current" and backend_of(url) == "sqlite":
        from engine.store.sqlite import sqlite_path

        path = sqlite_path(url)
        if path is None or not path.exists():
            raise FileNotFoundError(f"There is no log at {url!r} yet.")
    if args.db_command == "upgrade":
        applied = await upgrade_database(url)
        verb = "upgraded to" if applied else "already at"
        console.print(f"{safe_url(url)} {verb} revision {head}.")
        return 0
    current = await database_revision(url)
    state = "up to date" if current == head else f"head is {head}"
    console.print(f"{safe_url(url)}: revision {current} ({state}).")
    return 0 if current == head else 1


def _stop_on_sigterm() -> None:
    # SIGTERM cancels the command like Ctrl-C: the worker's async with block
    # then stops it the documented way (running tasks get their timeout,
    # then end CANCELLED; queued ones stay queued).
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)


def _freeze_startup_objects() -> None:
    # The modules and the replayed projection loaded at start-up live as
    # long as the process: moving them out of the collector's generations
    # spares every later full collection a walk over them (measured: about
    # 20% of a busy node's time). An application-level choice, so the command
    # makes it, never the library.
    import gc

    gc.collect()
    gc.freeze()
    # A busy node allocates a few container objects per event, most freed at
    # once; collecting the young generation every 10,000 allocations instead
    # of 700 lets fewer live ones be walked again (measured: 3 to 4% of a
    # node's processing rate; each young collection stays near a millisecond).
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(10_000, middle, oldest)


async def _open_reader(url: str) -> Any:
    from engine.store import make_store

    backend = backend_of(url)
    if backend == "sqlite":
        from engine.store.sqlite import sqlite_path

        path = sqlite_path(url)
        if path is None or not path.exists():
            raise FileNotFoundError(
                f"There is no log at {url!r}; run 'taskengine demo' first or "
                "pass --database."
            )
        # The embedded log migrates itself, as a worker opening it would.
        store = make_store(url, exclusive=False, migrate=True)
    else:
        store = make_store(url)
    await store.open()
    return store


async def _tasks(args: argparse.Namespace) -> int:
    from projections.replay import replay

    store = await _open_reader(_database(args))
    try:
        state = await replay(store)
    finally:
        await store.close()
    infos = sorted(state.infos.values(), key=lambda i: i.created_at, reverse=True)
    if args.status:
        wanted = {status.lower() for status in args.status}
        infos = [info for info in infos if info.status.value in wanted]
    if args.task_type:
        infos = [info for info in infos if info.task_type == args.task_type]
    table = Table(title=f"{len(infos)} tasks (newest first)")
    for column in ("id", "type", "status", "attempt", "created", "duration", "error"):
        table.add_column(column, overflow="fold")
    for info in infos[: args.limit]:
        table.add_row(
            info.id,
            info.task_type or "",
            info.status.value,
            str(info.attempt),
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            _duration(info),
            (info.error or "")[:120],
        )
    console.print(table)
    return 0


def _duration(info: Any) -> str:
    if info.started_at is None or info.completed_at is None:
        return ""
    return f"{(info.completed_at - info.started_at).total_seconds():.3f} s"


async def _history(args: argparse.Namespace) -> int:
    store = await _open_reader(_database(args))
    try:
        events = await store.read_task(args.task_id)
    finally:
        await store.close()
    if not events:
        errors.print(
            f"[red]error:[/red] No task with id {args.task_id!r} is in the log."
        )
        return 2
    table = Table(title=f"task {args.task_id}")
    for column in ("version", "position", "type", "at", "data"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(
            str(event.version),
            str(event.position),
            event.type.value,
            event.at.isoformat(timespec="milliseconds"),
            _render(event.data),
        )
    console.print(table)
    return 0


def _render(data: dict[str, Any], limit: int = 250) -> str:
    from engine.events import encode_payload

    text = json.dumps(encode_payload(data), default=repr, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _replay(args: argparse.Namespace) -> int:
    from projections.replay import replay

    store = await _open_reader(_database(args))
    try:
        state = await replay(store, until_position=args.position, until_at=args.at)
    finally:
        await store.close()
    table = Table(title=f"state as of position {state.position}")
    table.add_column("status")
    table.add_column("tasks", justify="right")
    for status, count in sorted(state.status_counts().items()):
        table.add_row(status, f"{count:,}")
    console.print(table)
    console.print(f"{state.events:,} events folded into {len(state.infos):,} tasks.")
    return 0


async def _tail(args: argparse.Namespace) -> int:
    store = await _open_reader(_database(args))
    try:
        after = args.after
        if after is None:
            after = max(0, await store.last_position() - 20)
        while True:
            batch = await store.read(after, 1000)
            for event in batch:
                console.print(
                    f"{event.position:>8} {event.at.isoformat(timespec='milliseconds')}"
                    f" {event.task_id} v{event.version} {event.type.value}"
                    f" {_render(event.data, 120)}",
                    markup=False,
                    highlight=False,
                )
                after = event.position or after
            if not batch and not args.follow:
                return 0
            if not batch:
                await asyncio.sleep(args.poll)
    finally:
        await store.close()


async def _report(args: argparse.Namespace) -> int:
    from projections.reporting import run_reports

    url = _database(args)
    await (await _open_reader(url)).close()
    for title, columns, rows in await run_reports(url):
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(value) for value in row))
        console.print(table)
    return 0


async def _export(args: argparse.Namespace) -> int:
    from engine.events import encode_payload

    store = await _open_reader(_database(args))
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    count = 0
    try:
        async for batch in store.iter_batches():
            for event in batch:
                record = event.model_dump(mode="json", exclude={"data"})
                record["data"] = encode_payload(event.data)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    finally:
        await store.close()
        if args.output:
            out.close()
            errors.print(f"Wrote {count:,} events to {args.output}.")
    return 0


_COMMANDS = {
    "demo": _demo,
    "worker": _worker,
    "serve": _demo,  # replaced in main(): uvicorn runs its own loop
    "db": _db,
    "tasks": _tasks,
    "history": _history,
    "replay": _replay,
    "tail": _tail,
    "report": _report,
    "export": _export,
}


if __name__ == "__main__":
    raise SystemExit(main())
