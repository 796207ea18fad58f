"""Event stores: where the log lives (memory, SQLite, PostgreSQL).

``open_store`` turns what a user passes as ``store=`` into an
:class:`EventStore`.
"""

from __future__ import annotations

from engine.exceptions import UsageError
from engine.store.base import EventStore
from engine.store.memory import MemoryEventStore
from engine.store.urls import backend_of

__all__ = ["EventStore", "MemoryEventStore", "make_store"]


def make_store(store: EventStore | str | None, **options: object) -> EventStore:
    """An :class:`EventStore` for ``store``: a store, a URL, or None (memory).

    Raises:
        UsageError: the URL names a backend taskengine has no store for.
    """
    if store is None:
        return MemoryEventStore()
    if isinstance(store, EventStore):
        return store
    if not isinstance(store, str):
        raise UsageError(
            f"The store must be an EventStore, a database URL or None, not {store!r}."
        )
    backend = backend_of(store)
    if backend == "memory":
        return MemoryEventStore()
    if backend == "sqlite":
        from engine.store.sqlite import SQLiteEventStore

        return SQLiteEventStore(store, **options)  # type: ignore[arg-type]
    if backend == "postgresql":
        from engine.store.postgres import PostgresEventStore

        return PostgresEventStore(store, **options)  # type: ignore[arg-type]
    raise UsageError(
        f"No event store for database URL {store!r}; use "
        "'sqlite+aiosqlite:///path.db' or 'postgresql+asyncpg://...'."
    )
