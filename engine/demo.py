"""The demo workload of ``taskengine demo``: index real files, one task each.

Each task reads one file, and returns its line count, word count, size and
SHA-256. A file that is not UTF-8 text ends FAILED with the decoder's own,
readable error.
"""

from __future__ import annotations

import asyncio
import hashlib
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.registry import task

__all__ = [
    "INDEX_FILE",
    "NotTextError",
    "default_directory",
    "index_file",
    "iter_files",
]

INDEX_FILE = "taskengine.demo.index_file"
_SKIPPED_DIRECTORIES = frozenset({"__pycache__", "site-packages", ".git"})
_CHUNK_BYTES = 256 * 1024


def default_directory() -> Path:
    """The Python standard library's source directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def iter_files(directory: Path, pattern: str = "*") -> Iterator[Path]:
    """Regular files under ``directory`` matching ``pattern``, sorted, skipping
    caches and installed packages."""
    for path in sorted(directory.rglob(pattern)):
        if _SKIPPED_DIRECTORIES.intersection(path.parts):
            continue
        if path.is_file() and not path.is_symlink():
            yield path


class NotTextError(ValueError):
    """The file is not UTF-8 text."""


def _read(path: str, progress: Callable[[float], None] | None) -> dict[str, Any]:
    digest = hashlib.sha256()
    chunks = []
    size = Path(path).stat().st_size or 1
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
            chunks.append(chunk)
            done += len(chunk)
            if progress is not None:
                progress(min(done / size, 0.99))
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotTextError(
            f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start} ({exc.reason})."
        ) from None
    return {
        "path": path,
        "bytes": len(raw),
        "lines": text.count("\n") + (1 if text and not text.endswith("\n") else 0),
        "words": len(text.split()),
        "sha256": digest.hexdigest(),
    }


@task(INDEX_FILE)
async def index_file(
    path: str, progress_callback: Callable[[float], None] | None = None
) -> dict[str, Any]:
    """Count lines and words of one UTF-8 file and hash it."""
    return await asyncio.to_thread(_read, path, progress_callback)


async def run_demo(
    directory: Path,
    database: str,
    *,
    workers: int = 8,
    pattern: str = "*",
    limit: int | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Index every file under ``directory`` through a worker on ``database``,
    with a live progress bar, and print a summary table. Returns the totals."""
    import time

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from engine.worker import AsyncTaskWorker

    console = console or Console()
    files = [str(path) for path in iter_files(directory, pattern)]
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(
            f"No files match {pattern!r} under {str(directory)!r}; pass another "
            "DIRECTORY or --pattern."
        )
    started_s = time.monotonic()
    async with AsyncTaskWorker(max_workers=workers, store=database) as worker:
        subscriber_id, queue = worker.events.subscribe()
        specs = [{"task_type": INDEX_FILE, "args": [path]} for path in files]
        task_ids = await worker.add_tasks(specs)
        columns = (
            TextColumn("[bold]Indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            progress_id = bar.add_task("index", total=len(task_ids), failed=0)
            await _follow(worker, queue, set(task_ids), bar, progress_id)
        worker.events.unsubscribe(subscriber_id)
        infos = [worker.get_task_info(task_id) for task_id in task_ids]
    elapsed_s = time.monotonic() - started_s
    totals = _summarise(infos, elapsed_s)
    _print_summary(console, totals, database)
    return totals


async def _follow(
    worker: Any, queue: Any, waiting: set[str], bar: Any, progress_id: Any
) -> None:
    failed = 0
    for task_id in list(waiting):
        info = worker.get_task_info(task_id)
        if info is not None and info.finished:
            waiting.discard(task_id)
            failed += info.status.value != "completed"
    bar.update(progress_id, completed=bar.tasks[0].total - len(waiting), failed=failed)
    while waiting:
        event = await queue.get()
        if event.get("type") == "overflow":
            # Fell behind the bus: re-read the projection instead.
            return await _follow(worker, queue, waiting, bar, progress_id)
        if event.get("task_id") not in waiting:
            continue
        if event["status"] in ("completed", "failed", "cancelled"):
            waiting.discard(event["task_id"])
            failed += event["status"] != "completed"
            bar.update(progress_id, advance=1, failed=failed)
    return None


def _summarise(infos: list[Any], elapsed_s: float) -> dict[str, Any]:
    done = [i for i in infos if i is not None and i.status.value == "completed"]
    failed = [i for i in infos if i is not None and i.status.value == "failed"]
    errors: dict[str, int] = {}
    for info in failed:
        errors[info.error_type or "?"] = errors.get(info.error_type or "?", 0) + 1
    return {
        "files": len(infos),
        "completed": len(done),
        "failed": len(failed),
        "lines": sum(i.result["lines"] for i in done),
        "words": sum(i.result["words"] for i in done),
        "bytes": sum(i.result["bytes"] for i in done),
        "elapsed_s": elapsed_s,
        "errors": errors,
        "failed_examples": [(i.id, i.error) for i in failed[:5]],
    }


def _print_summary(console: Any, totals: dict[str, Any], database: str) -> None:
    from rich.table import Table

    table = Table(title="taskengine demo", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rate = totals["files"] / totals["elapsed_s"] if totals["elapsed_s"] else 0.0
    rows = [
        ("files", f"{totals['files']:,}"),
        ("completed", f"{totals['completed']:,}"),
        ("failed", f"{totals['failed']:,}"),
        ("lines", f"{totals['lines']:,}"),
        ("words", f"{totals['words']:,}"),
        ("bytes", f"{totals['bytes']:,}"),
        ("elapsed", f"{totals['elapsed_s']:.2f} s ({rate:,.0f} tasks/s)"),
    ]
    for error_type, count in sorted(totals["errors"].items()):
        rows.append((f"failed: {error_type}", f"{count:,}"))
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    for task_id, error in totals["failed_examples"]:
        console.print(f"[red]failed[/red] {task_id}: {error}")
    console.print(
        f"The log is in {database}. Try: taskengine tasks --status failed, "
        "taskengine history TASK_ID, taskengine report."
    )
