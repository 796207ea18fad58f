"""Database URL helpers: normalise drivers and hide passwords.

SQLAlchemy is imported on first use: a worker on the memory store never
loads it, which keeps the process's heap (and every full garbage collection
over it) about half the size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.exceptions import UsageError

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["async_url", "backend_of", "safe_url", "sync_url"]


def _parse(url: str) -> sa.engine.URL:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise UsageError(
            f"{url!r} is not a database URL; use sqlite+aiosqlite:///path.db or "
            "postgresql+asyncpg://user@host/database."
        ) from None


def backend_of(url: str) -> str:
    """``"sqlite"``, ``"postgresql"`` or ``"memory"`` for a store URL.

    Raises:
        UsageError: ``url`` cannot be parsed as a database URL.
    """
    if url.startswith("memory:"):
        return "memory"
    return _parse(url).get_backend_name()


def async_url(url: str) -> str:
    """The URL with the async driver we use for its backend."""
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The URL with the stdlib sqlite3 driver (SQLite only)."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and messages."""
    if url.startswith("memory:"):
        return url
    return _parse(url).render_as_string(hide_password=True)
