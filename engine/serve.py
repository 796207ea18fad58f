"""``taskengine serve``: the HTTP API and the dashboard, run by uvicorn.

:func:`create_app` builds the FastAPI app around a worker; the CLI calls
:func:`add_serve_arguments` and :func:`serve_main`. Needs the ``api`` extra.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from engine.api import (
    BearerTokenMiddleware,
    create_task_worker_router,
    install_error_handlers,
)
from engine.exceptions import UsageError
from engine.worker import AsyncTaskWorker

__all__ = ["add_serve_arguments", "create_app", "serve_main"]

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///taskengine.db"
DATABASE_ENV = "TASKENGINE_DATABASE_URL"
TOKEN_ENV = "TASKENGINE_API_TOKEN"
STATIC_DIR = Path(__file__).with_name("static")
DASHBOARD_FILES = ("/", "/index.html", "/app.js", "/style.css")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}

PROXY_HELP = f"""\
Behind a reverse proxy:
  Keep the server on 127.0.0.1 and let the proxy face the network. Start it
  with --forwarded-allow-ips set to the proxy's address so that uvicorn trusts
  its X-Forwarded-For and X-Forwarded-Proto headers, and with --root-path
  /prefix when the proxy serves it under a sub-path. /events is a stream of
  Server-Sent Events: turn response buffering off for it (nginx:
  "proxy_buffering off;", which the X-Accel-Buffering: no header the server
  sends also requests), use HTTP/1.1 to the server, and keep the proxy's read
  timeout above the keep-alive interval (--sse-ping, 15 s). /ws/tasks/ needs
  the WebSocket upgrade forwarded (nginx: "proxy_http_version 1.1;",
  "proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Connection
  upgrade;").

Token:
  With --token or ${TOKEN_ENV} set, every API request needs
  "Authorization: Bearer TOKEN" or "?token=TOKEN"; open the dashboard as
  http://HOST:PORT/?token=TOKEN. Prefer the environment variable: a command
  line is visible to other users of the machine.
"""


def create_app(
    worker: AsyncTaskWorker,
    *,
    token: str | None = None,
    dashboard: bool = True,
    sse_ping_interval: float = 15.0,
    manage_worker: bool = True,
) -> FastAPI:
    """A FastAPI app serving ``worker``'s API and, at ``/``, the dashboard.

    Args:
        worker: The worker to expose.
        token: When given, every request needs it as a bearer token (the
            dashboard's static files excepted: they hold no data).
        dashboard: Serve the dashboard at ``/``.
        sse_ping_interval: Seconds between keep-alive comments on ``/events``.
        manage_worker: Start the worker with the app and stop it after.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_worker:
            await worker.start()
        try:
            yield
        finally:
            if manage_worker:
                await worker.stop()

    app = FastAPI(title="taskengine", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(
        create_task_worker_router(worker, sse_ping_interval=sse_ping_interval)
    )
    if dashboard:
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")
    if token:
        public = DASHBOARD_FILES if dashboard else ()
        app.add_middleware(BearerTokenMiddleware, token=token, public_paths=public)
    return app


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``taskengine serve`` to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Serve the HTTP API (tasks, Server-Sent Events, WebSocket) and the "
        "dashboard at / with uvicorn."
    )
    parser.epilog = PROXY_HELP
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    add("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    add(
        "--database",
        metavar="URL",
        default=None,
        help=f"event store URL (default: ${DATABASE_ENV}, else {DEFAULT_DATABASE_URL})",
    )
    add(
        "--token",
        default=None,
        help=f"bearer token every request must carry (default: ${TOKEN_ENV})",
    )
    add(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE to register its task types (repeatable)",
    )
    add(
        "--no-examples",
        action="store_true",
        help="do not register the demonstration task types (sleep, add, ...)",
    )
    add(
        "--max-workers",
        type=int,
        default=10,
        help="tasks run at once (default: %(default)s)",
    )
    add(
        "--sse-ping",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="keep-alive interval of idle event streams (default: %(default)s)",
    )
    add(
        "--root-path",
        default="",
        help="path prefix the proxy serves this under, such as /taskengine",
    )
    add(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="comma-separated proxy addresses whose X-Forwarded-* headers are "
        "trusted (default: %(default)s)",
    )
    add("--log-level", default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default: %(default)s)")  # fmt: skip


def database_url(given: str | None) -> str:
    """The store URL: ``--database``, else the environment, else the default."""
    return given or os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE_URL


def api_token(given: str | None) -> str | None:
    """The API token: ``--token``, else the environment, else none."""
    return given or os.environ.get(TOKEN_ENV) or None


def load_task_modules(modules: Sequence[str], examples: bool) -> None:
    """Import the modules that register task types.

    Raises:
        SystemExit: a module cannot be imported (status 2, with a sentence).
    """
    # The demo's task type too, so tasks a stopped demo left in the log
    # resume here instead of failing as an unknown type.
    names = (["engine.examples", "engine.demo"] if examples else []) + list(modules)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import error is reported
            print(
                f"taskengine serve: cannot import task module {name!r}: "
                f"{type(exc).__name__}: {exc}. Check the name and that it is "
                "on PYTHONPATH.",
                file=sys.stderr,
            )
            raise SystemExit(2) from exc


def _check_store_opens(url: str) -> None:
    # Open and close the log once before uvicorn starts, so that a log held
    # by another worker, a missing database or a file that is not a database
    # is one sentence here rather than a failed application start-up.
    import asyncio

    from engine.store import make_store

    async def probe() -> None:
        store = make_store(url)
        await store.open()
        await store.close()

    asyncio.run(probe())


def _check_port_free(host: str, port: int) -> None:
    # Refuse a busy or impossible address before the worker starts: a worker
    # that starts, resumes tasks and then stops because uvicorn cannot bind
    # would cancel the tasks it resumed.
    import socket

    if not 0 <= port <= 65535:
        raise UsageError(f"Port {port} is not a TCP port (0 to 65535).")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise UsageError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}; pick another "
            "--port or stop what holds it."
        ) from None


def serve_main(args: argparse.Namespace) -> int:
    """Run ``taskengine serve`` until interrupted; returns the exit status."""
    import uvicorn

    load_task_modules(args.imports, examples=not args.no_examples)
    _check_port_free(args.host, args.port)
    _check_store_opens(database_url(args.database))
    token = api_token(args.token)
    if token is None and args.host not in _LOOPBACK:
        logger.warning(
            "Serving on a non-loopback address without an API token",
            extra={"action": "serve_without_token", "host": args.host},
        )
    worker = AsyncTaskWorker(
        max_workers=args.max_workers, store=database_url(args.database)
    )
    app = create_app(worker, token=token, sse_ping_interval=args.sse_ping)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        root_path=args.root_path,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
        ws="websockets-sansio",
    )
    uvicorn.Server(config).run()
    return 0


def _run_standalone(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskengine serve")
    add_serve_arguments(parser)
    return serve_main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(_run_standalone())
